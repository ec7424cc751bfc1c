"""manual/embedding.py against torch.nn: Embedding's forward and weight gradient over a table of
cases (padding_idx positive and negative, scale_grad_by_freq, repeated tokens, a random sweep), in
float64 and float32; its refusals as torch's; the loss over every time step, flattened (manual's
TimeSteps) against torch's (N, C, T) convention."""
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from manual.embedding import Embedding, TimeSteps
from manual.losses import make_loss
from manual.names import LAYER_REGISTRY, REQUIRED
from torch_ref.testing import compare, tolerance

torch.set_num_threads(1)
DTYPES = ("float64", "float32")


def build(args, kwargs, dtype):
    """torch's Embedding and manual's, torch's random weight copied over."""
    theirs = nn.Embedding(*args, **kwargs, dtype=getattr(torch, dtype))
    mine = Embedding(*args, **kwargs, dtype=np.dtype(dtype))
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    mine.weight.data[...] = theirs.weight.detach().numpy()
    return theirs, mine


def expect(mine, theirs, what, dtype):
    theirs = theirs.detach().numpy()
    assert mine.dtype == np.dtype(dtype), f"{what}: {mine.dtype}"
    result = compare(mine, theirs, *tolerance(dtype))
    assert result.ok, f"{what}: {result}"


def check(args, kwargs, shape, dtype, seed=0):
    """Forward and the weight's gradient for one integer input and one random upstream gradient."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    theirs, mine = build(args, kwargs, dtype)
    x = rng.integers(0, args[0], shape)
    if kwargs.get("padding_idx") is not None:  # make sure the padding token occurs
        x.reshape(-1)[0] = kwargs["padding_idx"] % args[0]
    yt, y = theirs(torch.as_tensor(x)), mine(x)
    expect(y, yt, "output", dtype)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))
    assert mine.backward(g) is None  # integer input: no gradient
    expect(mine.weight.grad, theirs.weight.grad, "grad of weight", dtype)
    return mine


CASES = [  # (args, kwargs, input shape)
    ((7, 3), {}, (2, 5)),
    ((5, 4), {"padding_idx": 0}, (3, 6)),
    ((5, 4), {"padding_idx": -1}, (3, 6)),  # negative: counts from the end, normalised to 4
    ((6, 2), {"scale_grad_by_freq": True}, (4, 9)),
    ((6, 2), {"scale_grad_by_freq": True, "padding_idx": 2}, (4, 9)),
    ((3, 5), {}, (8, 12)),  # few tokens: every row hit many times
    ((20, 3), {}, (1, 1)),  # most rows untouched: their gradient is zero
    ((4, 3), {}, (5,)),  # one axis: (T,) -> (T, D)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("args,kwargs,shape", CASES, ids=[f"{a}-{k}-{s}" for a, k, s in CASES])
def test_embedding_matches_torch(args, kwargs, shape, dtype):
    check(args, kwargs, shape, dtype)


@pytest.mark.parametrize("seed", range(6))
def test_embedding_matches_torch_on_random_sizes(seed):
    rng = np.random.default_rng(100 + seed)
    v, d = int(rng.integers(1, 30)), int(rng.integers(1, 6))
    kwargs = {"padding_idx": int(rng.integers(-v, v)) if rng.random() < 0.5 else None,
              "scale_grad_by_freq": bool(rng.random() < 0.5)}
    check((v, d), kwargs, (int(rng.integers(1, 5)), int(rng.integers(1, 10))), "float64", seed)


def test_the_padding_row_gets_no_gradient_and_others_accumulate():
    mine = check((5, 4), {"padding_idx": 1}, (3, 6), "float64")
    assert mine.padding_idx == 1 and not mine.weight.grad[1].any()
    first = mine.weight.grad.copy()
    x, g = mine.input, np.ones(mine.input.shape + (4,))
    mine(x)
    mine.backward(g)
    assert np.allclose(mine.weight.grad - first, np.eye(5)[x.reshape(-1)].sum(0)[:, None] * (np.arange(5) != 1)[:, None])


@pytest.mark.parametrize("kwargs,error", [
    ({"padding_idx": 5}, ValueError), ({"padding_idx": -6}, ValueError),
    ({"max_norm": 1.0}, ValueError), ({"sparse": True}, ValueError)])
def test_embedding_refuses_what_torch_refuses_or_is_not_offered(kwargs, error):
    with pytest.raises(error):
        Embedding(5, 2, **kwargs)


def test_a_given_frozen_weight_is_used_and_gets_no_gradient():
    w = np.arange(6.0).reshape(3, 2)
    mine = Embedding(3, 2, _weight=w, _freeze=True)
    assert np.array_equal(mine(np.array([[2, 0]])), w[[[2, 0]]]) and not mine.weight.data is w
    assert mine.backward(np.ones((1, 2, 2))) is None and mine.weight.grad is None and mine.parameters() == []


@pytest.mark.parametrize("x,error", [(np.zeros((2, 3)), TypeError), (np.array([[0, 5]]), IndexError),
                                     (np.array([[-1, 0]]), IndexError)])
def test_embedding_refuses_inputs_torch_refuses(x, error):
    with pytest.raises(error):
        Embedding(5, 2)(x)
    with pytest.raises(error if error is IndexError else RuntimeError):
        nn.Embedding(5, 2)(torch.as_tensor(x))


def test_the_registry_entry_has_torchs_arguments_and_defaults():
    signature = inspect.signature(nn.Embedding.__init__).parameters
    for key, default in LAYER_REGISTRY["Embedding"].args.items():
        want = signature[key].default
        assert (default == REQUIRED and want is inspect.Parameter.empty) or default == want, key


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_the_loss_over_time_steps_flattened_is_torchs_n_c_t_form(reduction, label_smoothing):
    """manual: cross-entropy of output.reshape(−1, C) against y.reshape(−1) (TimeSteps); torch:
    loss(output.transpose(1, 2), y) on (N, C, T). Same loss, same gradient (N, T, C); a wrong
    reshape (C and T swapped, or the mean over N only) would give neither."""
    rng = np.random.default_rng(3)
    n, t, c = 3, 5, 4
    out, y = rng.standard_normal((n, t, c)), rng.integers(0, c, (n, t))
    args = {"reduction": reduction, "label_smoothing": label_smoothing, "target": "index"}
    loss = TimeSteps(make_loss("cross_entropy", args))
    value, grad = loss.forward(out, y), loss.backward()
    ot = torch.tensor(out, requires_grad=True)
    lt = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)(ot.transpose(1, 2),
                                                                                     torch.as_tensor(y))
    lt.backward()
    assert grad.shape == (n, t, c)
    assert compare(np.asarray(value), lt.detach().numpy(), *tolerance("float64")).ok
    assert compare(grad, ot.grad.numpy(), *tolerance("float64")).ok
