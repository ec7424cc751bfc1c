"""Lockstep on a table of architectures, activations, losses, bias modes, batch sizes and dtypes."""
import numpy as np
import pytest

from torch_ref.lockstep import lockstep
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
