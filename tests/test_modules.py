"""Unit-level checks of every activation and loss against torch, one table each: the forward value,
and the backward with a RANDOM upstream gradient (an all-ones gradient, what `y.sum().backward()`
gives, hides transposition and broadcasting bugs: see test_all_ones_upstream_gradient_hides_a_bug),
in float64 with the tight tolerance of torch_ref.testing (and once in float32 with its own), on random
shapes, a few seeds each.

The references are written out here with torch.nn.functional directly, not taken from the twin, so
a wrong mapping in torch_ref/twin/model.py cannot hide a wrong manual formula (the lockstep tables in
test_activations_losses.py check that mapping).
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manual.losses import LOSSES, make_loss
import manual.activations
from manual.activations import ACTIVATIONS
from torch_ref.description import names, spec
from torch_ref.testing import compare, tolerance

SEEDS = [0, 1, 2]

# name, arguments, the torch reference. Every activation of names.ACTIVATIONS appears at least once.
ACTIVATION_CASES = [
    ("sigmoid", {}, torch.sigmoid),
    ("tanh", {}, torch.tanh),
    ("relu", {}, F.relu),
    ("identity", {}, lambda x: x * 1),
    ("leaky_relu", {"negative_slope": 0.01}, F.leaky_relu),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, negative_slope=0.2)),
    ("leaky_relu", {"negative_slope": -1.5}, lambda x: F.leaky_relu(x, negative_slope=-1.5)),
    ("elu", {"alpha": 1.0}, F.elu),
    ("elu", {"alpha": 0.3}, lambda x: F.elu(x, alpha=0.3)),
    ("gelu", {"approximate": "none"}, F.gelu),
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    ("silu", {}, F.silu),
    ("softplus", {"beta": 1.0, "threshold": 20.0}, F.softplus),
    ("softplus", {"beta": 2.0, "threshold": 3.0}, lambda x: F.softplus(x, beta=2.0, threshold=3.0)),
    ("softplus", {"beta": -0.5, "threshold": 1.0}, lambda x: F.softplus(x, beta=-0.5, threshold=1.0)),
    ("softmax", {}, lambda x: F.softmax(x, dim=1)),
    ("log_softmax", {}, lambda x: F.log_softmax(x, dim=1)),
]
ACT_IDS = [f"{n}-{'-'.join(map(str, a.values()))}".rstrip("-") for n, a, _ in ACTIVATION_CASES]

# points where a formula changes branch: kinks, the softplus threshold (beta · x = threshold stays on
# the soft side, as torch's `>`), and large values
SPECIAL = [0.0, -0.0, 1e-3, -1e-3, 1.5, 10.0, -10.0, 30.0, -30.0]


def assert_close(manual, reference, what):
    __tracebackhide__ = True
    reference = reference.detach().numpy() if torch.is_tensor(reference) else np.asarray(reference)
    assert np.asarray(manual).dtype == reference.dtype, f"{what}: dtype {np.asarray(manual).dtype}, torch's {reference.dtype}"
    rtol, atol = tolerance(reference.dtype)
    c = compare(manual, reference, rtol, atol)
    assert c.ok, (f"{what}: {c.shape_error or ''} worst at {c.index}: manual {c.manual!r}, torch {c.reference!r}"
                  f" (abs {c.abs_err:.3e}, rel {c.rel_err:.3e}; {c.n_bad}/{c.numel} bad; atol {atol}, rtol {rtol})")


def random_input(rng, args=None):
    """(N, C) with N, C drawn from 1..7: N(0, 3²) entries, some replaced by branch points."""
    n, c = rng.integers(1, 8, size=2)
    x = 3.0 * rng.standard_normal((n, c))
    special = SPECIAL + [args["threshold"] / args["beta"]] if args and "threshold" in args else SPECIAL
    mask = rng.random((n, c)) < 0.3
    x[mask] = rng.choice(special, size=int(mask.sum()))
    return x


def check_activation(name, args, reference, x, grad_output):
    """Forward and backward of the manual activation against torch on one input."""
    __tracebackhide__ = True
    module = ACTIVATIONS[name](**args)
    out = module.forward(x.copy())
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)
    assert_close(out, yt, f"{name}{args} forward")
    grad_input = module.backward(grad_output.copy())
    yt.backward(torch.tensor(grad_output))
    assert_close(grad_input, xt.grad, f"{name}{args} backward")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,args,reference", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation_matches_torch(name, args, reference, seed):
    rng = np.random.default_rng(seed)
    x = random_input(rng, args)
    check_activation(name, args, reference, x, rng.standard_normal(x.shape))


def test_every_activation_is_in_the_table():
    assert {n for n, _, _ in ACTIVATION_CASES} == set(names.ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name,args,reference", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation_matches_torch_in_float32(name, args, reference):
    """The same in float32, against torch's float32 arithmetic, with the float32 tolerance."""
    rng = np.random.default_rng(7)
    x = random_input(rng, args).astype(np.float32)
    check_activation(name, args, reference, x, rng.standard_normal(x.shape).astype(np.float32))


@pytest.mark.parametrize("name,args,reference", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation_is_finite_and_silent_at_plus_minus_1000(name, args, reference):
    """No overflow, division by zero or invalid value (numpy's warnings turned into errors), finite
    values, and torch's values. Underflow to 0 is not an error: it is the correctly rounded result
    (numpy's default error state ignores it, and torch gives the same 0)."""
    x = np.array([[-1000.0, 1000.0, 0.0, -745.0, 710.0]])
    grad_output = np.array([[0.5, -2.0, 1.0, 3.0, -0.25]])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        module = ACTIVATIONS[name](**args)
        out = module.forward(x.copy())
        grad_input = module.backward(grad_output.copy())
    assert np.isfinite(out).all() and np.isfinite(grad_input).all()
    check_activation(name, args, reference, x, grad_output)


def test_stable_activations_at_plus_minus_1000_exact_values():
    x = np.array([[-1000.0, 1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        assert ACTIVATIONS["sigmoid"]().forward(x).tolist() == [[0.0, 1.0]]
        assert ACTIVATIONS["softplus"]().forward(x).tolist() == [[0.0, 1000.0]]
        # with the linear branch pushed out of reach, the soft branch itself stays finite (torch's
        # log1p(exp(1000)) would be inf here)
        assert ACTIVATIONS["softplus"](threshold=1e9).forward(x).tolist() == [[0.0, 1000.0]]
        assert ACTIVATIONS["log_softmax"]().forward(x).tolist() == [[-2000.0, 0.0]]


def test_subgradients_at_zero_are_torchs():
    """relu'(0) = 0, leaky_relu'(0) = negative_slope, elu'(0) = alpha (the x <= 0 branch)."""
    x, g = np.zeros((1, 1)), np.full((1, 1), 2.0)
    for name, args, expected in [("relu", {}, 0.0), ("leaky_relu", {"negative_slope": 0.2}, 0.4),
                                 ("elu", {"alpha": 0.3}, 0.6)]:
        m = ACTIVATIONS[name](**args)
        m.forward(x)
        assert m.backward(g).item() == expected, name


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_keeps_float32(name):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    m = ACTIVATIONS[name]()
    assert m.forward(x).dtype == np.float32
    assert m.backward(np.ones_like(x)).dtype == np.float32


def test_all_ones_upstream_gradient_hides_a_bug(monkeypatch):
    """Why the upstream gradient is random: log_softmax's backward with C in place of Σ_j grad_out_j
    is exact when grad_out is all ones, and wrong for any other grad_out."""
    def broken(self, grad_output):
        return grad_output - np.exp(self.out) * self.out.shape[1]

    monkeypatch.setattr(manual.activations.LogSoftmax, "backward", broken)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    reference = lambda t: F.log_softmax(t, dim=1)
    check_activation("log_softmax", {}, reference, x, np.ones_like(x))  # passes: the blind spot
    with pytest.raises(AssertionError, match="log_softmax.* backward"):
        check_activation("log_softmax", {}, reference, x, rng.standard_normal(x.shape))


# --- losses -------------------------------------------------------------------------------------

def t_half_sse(i, t):
    return 0.5 * ((i - t) ** 2).sum()


# name, arguments (reduction added below), input kind, target kind, the torch reference(input, target, reduction)
LOSS_CASES = [
    ("mse", {}, "real", "real", lambda i, t, r: F.mse_loss(i, t, reduction=r)),
    ("l1", {}, "real", "real", lambda i, t, r: F.l1_loss(i, t, reduction=r)),
    ("smooth_l1", {"beta": 1.0}, "real", "real", lambda i, t, r: F.smooth_l1_loss(i, t, reduction=r)),
    ("smooth_l1", {"beta": 0.5}, "real", "real", lambda i, t, r: F.smooth_l1_loss(i, t, reduction=r, beta=0.5)),
    ("smooth_l1", {"beta": 0.0}, "real", "real", lambda i, t, r: F.smooth_l1_loss(i, t, reduction=r, beta=0.0)),
    ("huber", {"delta": 1.0}, "real", "real", lambda i, t, r: F.huber_loss(i, t, reduction=r)),
    ("huber", {"delta": 0.3}, "real", "real", lambda i, t, r: F.huber_loss(i, t, reduction=r, delta=0.3)),
    ("cross_entropy", {"label_smoothing": 0.0, "target": "index"}, "logits", "index",
     lambda i, t, r: F.cross_entropy(i, t, reduction=r)),
    ("cross_entropy", {"label_smoothing": 0.25, "target": "index"}, "logits", "index",
     lambda i, t, r: F.cross_entropy(i, t, reduction=r, label_smoothing=0.25)),
    ("cross_entropy", {"label_smoothing": 0.0, "target": "probability"}, "logits", "probability",
     lambda i, t, r: F.cross_entropy(i, t, reduction=r)),
    ("cross_entropy", {"label_smoothing": 0.4, "target": "probability"}, "logits", "probability",
     lambda i, t, r: F.cross_entropy(i, t, reduction=r, label_smoothing=0.4)),
    # rows that do not sum to 1: torch accepts them, and the gradient is then p · Σ t − t
    ("cross_entropy", {"label_smoothing": 0.1, "target": "probability"}, "logits", "real",
     lambda i, t, r: F.cross_entropy(i, t, reduction=r, label_smoothing=0.1)),
    ("nll", {}, "log-probabilities", "index", lambda i, t, r: F.nll_loss(i, t, reduction=r)),
    ("bce", {}, "probabilities", "unit", lambda i, t, r: F.binary_cross_entropy(i, t, reduction=r)),
    ("bce_with_logits", {}, "logits", "unit", lambda i, t, r: F.binary_cross_entropy_with_logits(i, t, reduction=r)),
]
LOSS_TABLE = [(n, {**a, "reduction": r}, ik, tk, ref, r)
              for n, a, ik, tk, ref in LOSS_CASES for r in ("mean", "sum")]
LOSS_TABLE.append(("half-sse", {}, "real", "real", lambda i, t, r: t_half_sse(i, t), "sum"))
LOSS_IDS = [f"{n}-{'-'.join(map(str, a.values()))}".rstrip("-") for n, a, *_ in LOSS_TABLE]


def loss_input(kind, rng, n, c):
    x = 3.0 * rng.standard_normal((n, c))
    if kind == "probabilities":  # sigmoid outputs, with exact 0s and 1s to reach torch's clamp
        x = 1.0 / (1.0 + np.exp(-x))
        x[rng.random((n, c)) < 0.15] = 0.0
        x[rng.random((n, c)) < 0.15] = 1.0
    elif kind == "log-probabilities":
        x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    elif kind == "real":
        x[rng.random((n, c)) < 0.2] = 0.0  # equal to some targets below: l1's and smooth_l1's kink
    return x


def loss_target(kind, rng, n, c):
    if kind == "index":
        return rng.integers(0, c, n)
    if kind == "probability":
        return rng.dirichlet(np.ones(c), n)
    if kind == "unit":  # soft targets in [0, 1], exact 0s and 1s among them
        return np.clip(rng.uniform(-0.3, 1.3, (n, c)), 0.0, 1.0)
    t = 3.0 * rng.standard_normal((n, c))
    t[rng.random((n, c)) < 0.2] = 0.0
    return t


def check_loss(name, args, input_kind, target_kind, reference, reduction, seed, extreme=False, dtype=np.float64):
    __tracebackhide__ = True
    rng = np.random.default_rng(seed)
    n, c = (int(v) for v in rng.integers(1, 8, size=2))
    x = loss_input(input_kind, rng, n, c)
    if extreme:
        x = np.where(rng.random(x.shape) < 0.5, -1000.0, 1000.0) if input_kind in ("logits", "real") else x
    y = loss_target(target_kind, rng, n, c)
    x, y = x.astype(dtype), (y if target_kind == "index" else y.astype(dtype))
    loss_fn = make_loss(name, args)  # the description's arguments
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        loss = loss_fn.forward(x.copy(), y.copy())
        grad_input = loss_fn.backward()
    xt = torch.tensor(x, requires_grad=True)
    lt = reference(xt, torch.tensor(y), reduction)
    lt.backward()
    assert np.ndim(loss) == 0 and np.isfinite(loss)
    assert_close(loss, lt, f"{name}{args} loss")
    assert grad_input.shape == x.shape
    assert_close(grad_input, xt.grad, f"{name}{args} grad_input")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,args,input_kind,target_kind,reference,reduction", LOSS_TABLE, ids=LOSS_IDS)
def test_loss_matches_torch(name, args, input_kind, target_kind, reference, reduction, seed):
    """The loss (a scalar, so its upstream gradient is 1: the loss ends the chain) and dE/dinput."""
    check_loss(name, args, input_kind, target_kind, reference, reduction, seed)


@pytest.mark.parametrize("name,args,input_kind,target_kind,reference,reduction", LOSS_TABLE, ids=LOSS_IDS)
def test_loss_matches_torch_in_float32(name, args, input_kind, target_kind, reference, reduction):
    check_loss(name, args, input_kind, target_kind, reference, reduction, seed=7, dtype=np.float32)


@pytest.mark.parametrize("name,args,input_kind,target_kind,reference,reduction",
                         [c for c in LOSS_TABLE if c[2] == "logits"],
                         ids=[i for i, c in zip(LOSS_IDS, LOSS_TABLE) if c[2] == "logits"])
def test_losses_from_logits_are_stable_at_plus_minus_1000(name, args, input_kind, target_kind, reference,
                                                          reduction):
    """cross_entropy (log-sum-exp) and bce_with_logits stay finite, silent and equal to torch."""
    check_loss(name, args, input_kind, target_kind, reference, reduction, seed=5, extreme=True)


def test_every_loss_is_in_the_table():
    assert {c[0] for c in LOSS_TABLE} == set(names.LOSSES) == set(LOSSES)
    for name in names.LOSSES:  # every reduction of every loss that has one
        if "reduction" in spec.LOSS_ARGS[name] and name != "half-sse":  # half-sse: "sum" (batch-mean: test_penalty.py)
            assert {c[5] for c in LOSS_TABLE if c[0] == name} == {"mean", "sum"}


def test_bce_takes_torchs_clamp_and_floor():
    """log(0) is clamped to −100 and x (1 − x) floored at 1e-12 (a C float, as torch's EPSILON):
    values a textbook formula would give as inf or NaN."""
    x, t = np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]])
    bce = LOSSES["bce"](reduction="sum")
    assert bce.forward(x, t) == 200.0
    floor = float(np.float32(1e-12))
    assert bce.backward().tolist() == [[-1.0 / floor, 1.0 / floor, 0.0]]
