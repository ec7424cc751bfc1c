"""manual/losses.py's CrossEntropyLoss and NLLLoss on sequences against torch.nn.functional:
torch's (N, C, d1, ...) inputs with (N, d1, ...) class-index targets (and probability targets of
the input's shape), unbatched (C,) inputs, and ignore_index: an ignored target contributes nothing
and "mean" divides by the number of targets that count (every one ignored: NaN, as torch, with a
zero gradient), with label smoothing too. The loss and dE/dinput, float64 and float32.
(tests/test_modules.py holds the (N, C) table of every loss.)
"""
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manual.losses import CrossEntropyLoss, NLLLoss
from torch_ref.testing import compare, tolerance

torch.set_num_threads(1)


def expect(mine, theirs, what, dtype):
    theirs = theirs.detach().numpy()
    assert np.asarray(mine).dtype == np.dtype(dtype), f"{what}: {np.asarray(mine).dtype}"
    result = compare(mine, theirs, *tolerance(dtype))
    assert result.ok, f"{what}: {result}"


def targets(rng, shape, c, ignore_index, ignored):
    """Class indices of `shape` in [0, c), a fraction `ignored` of them set to ignore_index."""
    y = rng.integers(0, c, shape)
    y[rng.random(shape) < ignored] = ignore_index
    return y


# (loss, input shape (N, C, d1, ...) or (C,), ignore_index, fraction ignored, label_smoothing)
CASES = [
    ("cross_entropy", (4, 5), -100, 0.0, 0.0),
    ("cross_entropy", (4, 5), -100, 0.4, 0.0),
    ("cross_entropy", (3, 6, 7), -100, 0.3, 0.0),          # torch's (N, C, T): a sequence
    ("cross_entropy", (3, 6, 7), 2, 0.3, 0.2),             # an ignore_index among the classes, smoothing
    ("cross_entropy", (2, 4, 3, 5), -1, 0.5, 0.1),         # (N, C, H, W)
    ("cross_entropy", (5, 3, 1), -100, 1.0, 0.0),          # every target ignored
    ("cross_entropy", (5, 3, 4), -100, 1.0, 0.3),          # every target ignored, smoothing
    ("cross_entropy", (6,), -100, 0.0, 0.1),               # unbatched
    ("nll", (4, 5), -100, 0.4, 0.0),
    ("nll", (3, 6, 7), 0, 0.3, 0.0),
    ("nll", (2, 4, 3, 5), -100, 0.5, 0.0),
    ("nll", (5, 3, 2), -100, 1.0, 0.0),                    # every target ignored
    ("nll", (6,), -100, 0.0, 0.0),
]
TABLE = [case + (reduction, dtype) for case in CASES for reduction in ("mean", "sum")
         for dtype in ("float64", "float32")]


@pytest.mark.parametrize("name, shape, ignore_index, ignored, smoothing, reduction, dtype", TABLE,
                         ids=lambda v: str(v).replace(" ", ""))
def test_index_targets_with_ignore_index_match_torch(name, shape, ignore_index, ignored, smoothing, reduction,
                                                     dtype):
    rng = np.random.default_rng(zlib.crc32(repr((name, shape, ignored, reduction)).encode()))
    c = shape[0] if len(shape) == 1 else shape[1]
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    y = targets(rng, () if len(shape) == 1 else (shape[0],) + shape[2:], c, ignore_index, ignored)
    if name == "nll":
        x = x - np.log(np.exp(x).sum(axis=0 if len(shape) == 1 else 1, keepdims=True))
        mine = NLLLoss(ignore_index=ignore_index, reduction=reduction)
        reference = lambda t: F.nll_loss(t, torch.tensor(y), ignore_index=ignore_index, reduction=reduction)
    else:
        mine = CrossEntropyLoss(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
        reference = lambda t: F.cross_entropy(t, torch.tensor(y), ignore_index=ignore_index, reduction=reduction,
                                              label_smoothing=smoothing)
    xt = torch.tensor(x, requires_grad=True)
    lt = reference(xt)
    lt.backward()
    loss = mine(x, y)
    assert np.ndim(loss) == 0
    expect(loss, lt, "loss", dtype)  # NaN where torch's is NaN (every target ignored, "mean")
    grad = mine.backward()
    assert grad.shape == x.shape
    expect(grad, xt.grad, "grad_input", dtype)
    if ignored == 1.0:
        assert not grad.any() and (np.isnan(loss) if reduction == "mean" else loss == 0)


@pytest.mark.parametrize("dtype", ("float64", "float32"))
@pytest.mark.parametrize("smoothing", (0.0, 0.25))
def test_probability_targets_with_extra_axes_match_torch(smoothing, dtype):
    """Probability targets of the input's (N, C, T) shape: every position counts."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6)).astype(dtype)
    t = rng.dirichlet(np.ones(4), (3, 6)).transpose(0, 2, 1).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    lt = F.cross_entropy(xt, torch.tensor(t), label_smoothing=smoothing)
    lt.backward()
    mine = CrossEntropyLoss(label_smoothing=smoothing)
    expect(mine(x, t), lt, "loss", dtype)
    expect(mine.backward(), xt.grad, "grad_input", dtype)


def test_the_ignored_positions_change_nothing():
    """A wrong ignore_index rule (ignored targets counted in the mean's divisor, or their rows given a
    gradient) would make the loss depend on the logits of ignored positions or on how many there are."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 4))
    y = np.array([[1, -100, 3, -100], [-100, 0, -100, 4]])
    loss = CrossEntropyLoss()
    first = loss(x, y)
    grad = loss.backward()
    assert not grad[0, :, 1].any() and not grad[1, :, 0].any()
    kept = np.array([[0, 2], [1, 3]])
    dense = CrossEntropyLoss()(np.stack([x[i, :, kept[i]] for i in range(2)]).transpose(0, 2, 1),
                               np.stack([y[i, kept[i]] for i in range(2)]))
    np.testing.assert_allclose(first, dense, rtol=1e-14)


@pytest.mark.parametrize("loss", (CrossEntropyLoss(), NLLLoss()))
@pytest.mark.parametrize("bad", (5, -1))
def test_a_counted_target_out_of_bounds_is_refused_as_torch(loss, bad):
    with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
        loss(np.zeros((2, 5, 3)), np.array([[0, 1, 2], [bad, 0, -100]]))


def test_a_description_with_ignored_targets_runs_in_lockstep():
    """data.y may hold ignore_index (and only that value outside [0, C)); both sides ignore it."""
    from torch_ref.description import spec
    from torch_ref.errors import SpecError
    from torch_ref.lockstep.run import lockstep
    raw = {"network": {"sizes": [2, 4, 3], "activation": ["tanh", "identity"],
                       "loss": {"name": "cross_entropy", "ignore_index": -1}},
           "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.5},
           "data": {"x": [[0.5, -1.0], [1.0, 2.0], [-0.3, 0.1], [2.0, 0.0]], "y": [2, -1, 0, -1], "batch_size": 4},
           "run": {"steps": 5}}
    result = lockstep(spec.parse(raw))
    assert result.ok and np.isfinite(result.final_loss["reference"])
    raw["data"]["y"][1] = -100  # torch's default ignore_index, not this description's
    with pytest.raises(SpecError, match=r"data\.y\[1\]"):
        spec.parse(raw)
