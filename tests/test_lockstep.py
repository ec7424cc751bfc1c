"""Lockstep on a table of architectures, activations, losses, bias modes, batch sizes and dtypes."""
import numpy as np
import pytest

from torch_ref.lockstep.run import lockstep
from torch_ref.testing import tolerance

from conftest import make_desc

CASES = [
    # sizes,            activation,                               loss,       bias,            batch
    ([3, 1],            "sigmoid",                                "half-sse", "per-neuron",    1),
    ([2, 2, 2],         "sigmoid",                                "mse",      "shared-frozen", 3),
    ([4, 5, 3],         "tanh",                                   "half-sse", "none",          4),
    ([4, 8, 8, 2],      "relu",                                   "mse",      "per-neuron",    5),  # partial last batch
    ([6, 7, 5, 4, 3],   ["tanh", "relu", "sigmoid", "identity"],  "mse",      "per-neuron",    8),
    ([3, 9, 1],         ["relu", "identity"],                     "half-sse", "shared-frozen", 12),
    ([5, 5, 5],         "identity",                               "mse",      "none",          2),
    ([1, 16, 16, 16, 1], ["tanh", "tanh", "relu", "sigmoid"],     "half-sse", "per-neuron",    1),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,activation,loss,bias,batch", CASES,
                         ids=[f"{'-'.join(map(str, c[0]))}-{c[2]}-{c[3]}-b{c[4]}" for c in CASES])
def test_lockstep_passes(sizes, activation, loss, bias, batch, dtype):
    lr = 0.1 if loss == "mse" else 0.1 / batch  # a summed loss grows with the batch
    desc = make_desc(sizes, activation, loss, bias, batch_size=batch, n=12, steps=40, dtype=dtype, lr=lr)
    result = lockstep(desc)
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 40
    assert set(result.stats) == {"output", "loss", "delta", "grad", "param"}
    assert np.isfinite(result.final_loss["reference"])
    rtol, atol = tolerance(dtype)
    for stage, s in result.stats.items():
        assert s["max_abs_err"] <= atol + rtol * 100, (stage, s)  # values here are O(1)


def test_the_check_sees_training_happen():
    """A lockstep that compared frozen copies would pass trivially: the loss must move."""
    desc = make_desc([4, 8, 2], "tanh", steps=60, batch_size=12, n=12, lr=0.5)
    first = lockstep({**desc, "run": {**desc["run"], "steps": 1}}).final_loss["manual"]
    last = lockstep(desc).final_loss["manual"]
    assert last < 0.9 * first


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resync_mode_passes(dtype):
    desc = make_desc([4, 8, 8, 2], ["tanh", "relu", "sigmoid"], steps=100, dtype=dtype)
    result = lockstep(desc, mode="resync")
    assert result.ok, str(result.first_mismatch)
    assert result.mode == "resync"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the manual side overflows, as it should
def test_a_diverging_run_fails_instead_of_agreeing_on_nan():
    """Both sides overflow alike; NaN = NaN must not count as a pass."""
    desc = make_desc([3, 9, 1], ["relu", "identity"], "half-sse", batch_size=12, n=12, steps=200, lr=0.5)
    result = lockstep(desc)
    assert not result.ok
    m = result.first_mismatch
    assert (m.stage, m.name) == ("loss", "loss") and 0 < m.iteration < 200
    assert "diverged" in str(m)
    sane = lockstep(make_desc([3, 9, 1], ["relu", "identity"], "half-sse", batch_size=12, n=12, steps=200, lr=0.001))
    assert sane.ok, str(sane.first_mismatch)


class _Faulty:
    """The manual engine, with one fault planted at one iteration: a gradient off by 1e-6 of its
    size (a mismatch), or an exception."""

    def __init__(self, desc, at, kind):
        import manual.trainer
        self.inner, self.at, self.kind, self.it = manual.trainer.build(desc), at, kind, 0

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def train_step(self, x, y):
        it, self.it = self.it, self.it + 1
        if it == self.at and self.kind == "raise":
            raise RuntimeError("planted")
        result = self.inner.train_step(x, y)
        if it == self.at and self.kind == "grad":
            g = result["grads"]["layers.0.weight"] = result["grads"]["layers.0.weight"].copy()
            g[0, 0] += 1e-6 * (abs(g[0, 0]) + 1.0)
        return result


# (fault iteration, kind, batch size): the reference runs up to 64 iterations ahead of the
# implementation, and a chunk is compared in one pass; a fault just before, at and after a chunk's
# edge, with full and with partial batches (n = 10: batches of 4, 4, 2), is still found where it is.
AHEAD_CASES = [(0, "grad", 5), (1, "grad", 5), (63, "grad", 5), (64, "grad", 5), (65, "grad", 5),
               (130, "grad", 4), (62, "raise", 4), (64, "raise", 5), (129, "raise", 4)]


@pytest.mark.parametrize("at,kind,batch", AHEAD_CASES, ids=[f"{k}-at-{a}-b{b}" for a, k, b in AHEAD_CASES])
def test_a_fault_is_found_at_its_iteration_whatever_the_chunk(at, kind, batch):
    desc = make_desc([3, 4, 2], "tanh", batch_size=batch, n=10, steps=200)
    result = lockstep(desc, _Faulty(desc, at, kind), record=True)
    m = result.first_mismatch
    assert not result.ok and result.steps_checked == at, str(m)
    assert (m.iteration, m.stage) == (at, "grad" if kind == "grad" else "exception"), str(m)
    if kind == "grad":
        assert (m.name, m.index) == ("layers.0.weight", (0, 0)), str(m)
    # the history holds exactly the iterations compared: those before the fault, and the fault's
    recorded = ~np.isnan(result.history.loss[:, 0])
    assert recorded.sum() == at + (kind == "grad") and recorded[:at].all(), recorded.nonzero()


@pytest.mark.parametrize("batch", [4, 5], ids=["partial-batches", "full-batches"])
def test_comparing_a_chunk_at_once_changes_no_figure(batch, monkeypatch):
    """The same run compared one iteration at a time (the reference never ahead) gives the same
    per-stage figures and the same per-iteration history, to the bit."""
    import torch_ref.lockstep.loop
    desc = make_desc([3, 4, 2], "tanh", batch_size=batch, n=10, steps=150)
    chunked = lockstep(desc, record=True)
    monkeypatch.setattr(torch_ref.lockstep.loop, "AHEAD_ITERATIONS", 1)
    single = lockstep(desc, record=True)
    assert chunked.ok and single.ok
    assert chunked.stats == single.stats
    for a, b in [(chunked.history.abs, single.history.abs), (chunked.history.rel, single.history.rel),
                 (chunked.history.loss, single.history.loss)]:
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_reference_against_a_finite_value_is_a_mismatch(bad):
    """An infinite reference makes the allowance atol + rtol·|reference| infinite: the vectorised
    pass and the element-wise comparison must still reject a finite value facing it (and NaN)."""
    from torch_ref.lockstep.checker import Checker
    from torch_ref.testing import tolerance
    r = {"output": np.zeros((2, 2)), "loss": 0.5, "grads": {"w": np.array([1.0, bad])},
         "state_dict": {"w": np.zeros(2)}}
    m = {**r, "grads": {"w": np.array([1.0, 2.0])}}
    first = Checker(m, r, *tolerance("float64")).check_many([(0, m, r)])
    assert first is not None and (first.stage, first.name, first.index) == ("grad", "w", (1,)), first
    same = {**r, "grads": {"w": np.array([1.0, bad])}}  # the same non-finite value on both sides passes
    assert Checker(same, r, *tolerance("float64")).check_many([(0, same, r)]) is None


# (what is planted at iteration 3, element (1, 2) of grads "w": manual's value, reference's value)
PLANTED = {
    "nothing": None,
    "zero reference, within atol": (0.5, 0.0),      # passes by atol alone: relative difference infinite
    "zero reference, over atol": (1e3, 0.0),
    "just over rtol": (1 + 3.0, 1.0),                # scaled below by the tolerance
    "just within rtol": (1 + 0.5, 1.0),
    "NaN on both sides": (np.nan, np.nan),           # passes, as torch.isclose's equal_nan
    "NaN in manual": (np.nan, 1.0),
    "infinite difference": (np.inf, 1.0),
    "equal infinities": (np.inf, np.inf),
}


@pytest.mark.parametrize("block", [1, 64, 1 << 17], ids=["one-iteration-passes", "a-few", "all-in-one"])
@pytest.mark.parametrize("planted", list(PLANTED))
def test_the_vectorised_passes_decide_as_the_element_wise_comparison(planted, block, monkeypatch):
    """check_many over 8 iterations, compared in passes of `block` elements, against compare() on
    each tensor: the same verdict, and the same first mismatch (iteration, tensor, index)."""
    import torch_ref.lockstep.checker as checker
    from torch_ref.testing import compare, tolerance
    monkeypatch.setattr(checker, "BLOCK", block)
    rtol, atol = tolerance("float64")
    rng = np.random.default_rng(0)
    steps = []
    for it in range(8):
        r = {"output": rng.standard_normal((2, 3)), "loss": 0.5,
             "grads": {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
             "state_dict": {"w": rng.standard_normal((3, 4))}}
        m = {**r, "output": r["output"] * (1 + rtol / 10), "grads": {k: v.copy() for k, v in r["grads"].items()}}
        if it == 3 and PLANTED[planted] is not None:
            mine, ref = PLANTED[planted]
            if planted.startswith("just"):
                mine, ref = 1 + (mine - 1) * rtol + atol, ref
            m["grads"]["w"][1, 2], r["grads"]["w"][1, 2] = mine * (atol if "atol" in planted else 1), ref
        steps.append((it, m, r))
    expected = next(((it, name, c.index) for it, m, r in steps for name in ("w", "b")
                     if not (c := compare(m["grads"][name], r["grads"][name], rtol, atol)).ok), None)
    first = checker.Checker(steps[0][1], steps[0][2], rtol, atol).check_many(steps)
    got = None if first is None else (first.iteration, first.name, first.index)
    assert got == expected
    assert (expected is None) == (planted in ("nothing", "zero reference, within atol", "just within rtol",
                                              "NaN on both sides", "equal infinities"))
