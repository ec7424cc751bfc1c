"""Sequential, Residual, Flatten and Unflatten against torch: the names (state-dict keys), the forward
output, grad_input and every parameter gradient, in float64 and float32; for Sequential also each
module's output and the gradient with respect to it (what the lockstep compares module by module),
against torch's, read with forward hooks. torch has no Residual: its twin here is a tiny nn.Module
with `self.body = nn.Sequential(...)` whose forward is x + body(x).
"""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from manual.activations import Tanh
from manual.batchnorm import BatchNorm1d
from manual.container import Residual, Sequential
from manual.dropout import Dropout
from manual.flatten import Flatten, Unflatten
from manual.modules import Linear
from manual.normalization import LayerNorm
from test_norm_dropout import DTYPES, assert_close, check_step, load_from, randomize


class TorchResidual(nn.Module):
    """torch's twin of manual.container.Residual: x + body(x)."""

    def __init__(self, *modules):
        super().__init__()
        self.body = nn.Sequential(*modules)

    def forward(self, x):
        return x + self.body(x)


def twins(dtype):
    """(manual's, torch's) networks of every kind here, keyed by a name: a residual block with a
    Linear + Tanh body, and a Sequential nesting one, with a batch norm, a layer norm and a dropout
    (the Linear before the batch norm has no bias: its gradient would be 0 up to rounding)."""
    return {
        "residual": (Residual(Linear(5, 5, dtype=dtype), Tanh()), TorchResidual(nn.Linear(5, 5), nn.Tanh())),
        "sequential": (
            Sequential(Linear(5, 6, bias=False, dtype=dtype), BatchNorm1d(6, dtype=dtype), Tanh(),
                       Residual(Linear(6, 6, dtype=dtype), Tanh()), LayerNorm(6, dtype=dtype), Dropout(0.4),
                       Linear(6, 3, dtype=dtype)),
            nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6), nn.Tanh(),
                          TorchResidual(nn.Linear(6, 6), nn.Tanh()), nn.LayerNorm(6), nn.Dropout(0.4),
                          nn.Linear(6, 3))),
    }


NAMES = {
    "residual": ["body.0.weight", "body.0.bias"],
    "sequential": ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                   "1.num_batches_tracked", "3.body.0.weight", "3.body.0.bias", "4.weight", "4.bias",
                   "6.weight", "6.bias"],
}


def hand_torchs_dropout_mask(mine, theirs, x):
    """Runs torch's network on x under a hook that records its dropout's output and input, and
    hands the keep-mask read off them to manual's Dropout; torch's RNG is then reseeded so that the
    checked run draws the same mask again."""
    seen = {}
    dropout = next(m for m in theirs.modules() if isinstance(m, nn.Dropout))
    handle = dropout.register_forward_hook(lambda m, inp, out: seen.update(keep=(out != 0) | (inp[0] == 0)))
    state = {k: v.clone() for k, v in theirs.state_dict().items()}  # the batch norm's buffers move: restored after
    torch.manual_seed(0)
    with torch.no_grad():
        theirs(torch.tensor(x))
    handle.remove()
    theirs.load_state_dict(state)
    assert not seen["keep"].all()  # something is dropped
    next(m for m in mine_modules(mine) if isinstance(m, Dropout)).mask = seen["keep"].numpy()
    torch.manual_seed(0)


def mine_modules(module):
    """Every module under `module` (itself included), as torch's modules()."""
    yield module
    for _, child in module.named_children():
        yield from mine_modules(child)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["residual", "sequential"])
def test_containers_match_torch(kind, dtype):
    """Names, outputs, grad_input, parameter gradients and buffers over two training steps and one
    eval step; for the Sequential also outputs[i] and grad_outputs[i] of every module."""
    rng = np.random.default_rng(3)
    mine, theirs = twins(np.dtype(dtype))[kind]
    theirs.to(getattr(torch, dtype))
    randomize(theirs, torch.Generator().manual_seed(1))
    assert list(mine.state_dict()) == list(theirs.state_dict())  # torch's order: module by module
    assert sorted(mine.state_dict()) == sorted(NAMES[kind])
    for mine_names, torch_names in [(mine.named_parameters(), theirs.named_parameters()),
                                    (mine.named_buffers(), theirs.named_buffers())]:
        assert [n for n, _ in mine_names] == [n for n, _ in torch_names]  # and in torch's order
    load_from(mine, theirs)
    for k, training in enumerate([True, True, False]):
        mine.train(training)
        theirs.train(training)
        x = rng.standard_normal((7, 5)).astype(dtype)
        if kind == "sequential" and training:
            hand_torchs_dropout_mask(mine, theirs, x)
        outputs, handles = torch_outputs(theirs if kind == "sequential" else [])
        check_step(mine, theirs, x, rng, f"step {k}")
        for handle in handles:
            handle.remove()
        for i, out in enumerate(outputs):
            assert_close(mine.outputs[i], out, f"step {k} outputs[{i}]")
            assert_close(mine.grad_outputs[i], out.grad, f"step {k} grad_outputs[{i}]")
        assert len(outputs) == (len(mine) if kind == "sequential" else 0)


def torch_outputs(sequential):
    """(outputs, hook handles): the list fills with the output of each child of a torch nn.Sequential
    in the next forward, each keeping its .grad (retain_grad) for after the backward."""
    outputs = []

    def keep(module, inp, out):
        out.retain_grad()
        outputs.append(out)
    return outputs, [m.register_forward_hook(keep) for m in sequential]


def test_sequential_indexing_is_torchs():
    a, b, c = Linear(2, 3), Tanh(), Linear(3, 1)
    seq = Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    tail = seq[1:]
    assert len(tail) == 2 and tail[0] is b and [n for n, _ in tail.named_children()] == ["1", "2"]
    assert list(tail.state_dict()) == ["2.weight", "2.bias"]  # the names kept, as torch's slice
    named = Sequential(OrderedDict(hidden=Linear(2, 3), act=Tanh()))
    assert list(named.state_dict()) == ["hidden.weight", "hidden.bias"]


def test_train_and_eval_reach_every_module():
    net = Sequential(Linear(2, 2), Residual(BatchNorm1d(2), Dropout()))
    assert all(not m.training for m in mine_modules(net.eval()))
    assert all(m.training for m in mine_modules(net.train()))


def test_residual_refuses_a_body_that_changes_the_shape():
    with pytest.raises(ValueError, match="same shape"):
        Residual(Linear(3, 2))(np.ones((4, 3)))


# ---- flatten, unflatten -------------------------------------------------------------------------

# input shape, manual module, torch module
RESHAPE_CASES = [
    ((3, 4, 5), Flatten(), nn.Flatten()),
    ((2, 3, 4, 5), Flatten(), nn.Flatten()),
    ((2, 3, 4, 5), Flatten(0, 2), nn.Flatten(0, 2)),
    ((2, 3, 4, 5), Flatten(-3, -2), nn.Flatten(-3, -2)),
    ((2, 3, 4, 5), Flatten(2, 2), nn.Flatten(2, 2)),
    ((6, 1), Flatten(), nn.Flatten()),
    ((4, 12), Unflatten(1, (3, 4)), nn.Unflatten(1, (3, 4))),
    ((4, 12, 2), Unflatten(-2, [2, -1, 3]), nn.Unflatten(-2, [2, -1, 3])),
    ((6, 5), Unflatten(0, (3, 2)), nn.Unflatten(0, (3, 2))),
    ((4, 7), Unflatten(1, (7, 1, 1)), nn.Unflatten(1, (7, 1, 1))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, mine, theirs", RESHAPE_CASES,
                         ids=[f"{type(m).__name__}-{'x'.join(map(str, s))}-{i}" for i, (s, m, _) in enumerate(RESHAPE_CASES)])
def test_reshaping_matches_torch(shape, mine, theirs, dtype):
    rng = np.random.default_rng(len(shape))
    out = check_step(mine, theirs, rng.standard_normal(shape).astype(dtype), rng)
    assert out.shape == tuple(theirs(torch.zeros(shape)).shape)


@pytest.mark.parametrize("module, shape, error, match", [
    (Flatten(2, 1), (2, 3, 4), ValueError, "cannot come after"),
    (Flatten(3), (2, 3, 4), IndexError, "out of range"),
    (Unflatten(1, (2, 4)), (3, 6), ValueError, "does not fit"),
    (Unflatten(1, (-1, -1)), (3, 6), ValueError, "does not fit"),
    (Unflatten(1, (4, -1)), (3, 6), ValueError, "does not fit"),
])
def test_reshaping_refuses_what_torch_refuses(module, shape, error, match):
    with pytest.raises(error, match=match):
        module(np.ones(shape))


def test_unflatten_wants_a_tuple_of_ints():
    with pytest.raises(TypeError, match="tuple or list of ints"):
        Unflatten(1, 6)
