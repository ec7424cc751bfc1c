"""The comparison helper: tolerance rule, worst index, NaN and shape handling."""
import numpy as np
import pytest

from torch_ref.testing import TOLERANCES, compare, tolerance


def test_table_is_keyed_by_dtype_and_float64_is_tight():
    assert tolerance(np.float64) == (TOLERANCES["float64"]["rtol"], TOLERANCES["float64"]["atol"])
    assert TOLERANCES["float64"]["rtol"] <= 1e-12
    assert TOLERANCES["float32"]["rtol"] > TOLERANCES["float64"]["rtol"]


def test_worst_index_and_values():
    ref = np.arange(12, dtype=float).reshape(3, 4) + 1
    got = ref.copy()
    got[2, 1] += 1e-3
    got[0, 3] += 1e-9
    c = compare(got, ref, rtol=1e-6, atol=0)
    assert not c.ok and c.n_bad == 1 and c.numel == 12
    assert c.index == (2, 1)
    assert (c.manual, c.reference) == (got[2, 1], ref[2, 1])
    assert c.abs_err == pytest.approx(1e-3) and c.rel_err == pytest.approx(1e-3 / ref[2, 1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_on_one_side_fails(bad):
    c = compare(np.array([1.0, bad]), np.array([1.0, 2.0]), rtol=1e-3, atol=1e-3)
    assert not c.ok and c.index == (1,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_reference_facing_another_value_fails(bad):
    """The reference's NaN or infinity against a finite value (or another infinity) is a mismatch:
    inf / inf and inf / NaN are NaN, which no comparison with the allowance may let through."""
    for mine in (2.0, -bad if np.isinf(bad) else 2.0):
        c = compare(np.array([1.0, mine]), np.array([1.0, bad]), rtol=1e-3, atol=1e-3)
        assert not c.ok and c.index == (1,) and c.n_bad == 1, (mine, bad)


def test_equal_infinities_and_exact_zero_pass():
    c = compare(np.array([np.inf, 0.0]), np.array([np.inf, 0.0]), rtol=0, atol=0)
    assert c.ok and c.max_abs_err == 0


def test_shape_mismatch_is_reported_not_raised():
    c = compare(np.zeros((2, 3)), np.zeros((3, 2)), rtol=1e-3, atol=1e-3)
    assert not c.ok and "(2, 3)" in c.shape_error


def test_within_tolerance_boundary():
    assert compare(np.array([1.0 + 1e-12]), np.array([1.0]), rtol=1e-12, atol=1e-15).ok
    assert not compare(np.array([1.0 + 1e-10]), np.array([1.0]), rtol=1e-12, atol=1e-15).ok
