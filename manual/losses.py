"""Losses in numpy, as torch.nn's loss modules: `forward(input, target)` returns the loss as a
0-d array and caches what the gradient needs; `backward()` returns dE/dinput, shape (N, C).

`reduction` is torch's: "mean" averages the per-element (or, for cross_entropy and nll, the
per-sample) losses, "sum" adds them; the seed's `half-sse` is Σ ½(t − o)², always summed.
Targets are (N, C) arrays, except the class indices of cross_entropy and nll: (N,) integers.

Arguments are keyword-only where torch's constructor has deprecated or unsupported arguments before
them (`MSELoss(size_average, reduce, reduction)`): `MSELoss("sum")` would mean something else in
torch, so here it is a TypeError rather than a silent difference. torch's `weight`,
`ignore_index` and `pos_weight` are not supported. A loss is called as torch's, `loss(input,
target)` (the same as `forward`), and `backward()` gives dE/dinput.
"""
import sys

import numpy as np

from .functional import log1p_exp, log_softmax, sigmoid
from .modules import substitute
from .names import LOSS_REGISTRY, resolve


def _reduce(loss, reduction):
    """The mean or the sum of the elementwise (or per-sample) losses, as torch's `reduction`."""
    return np.mean(loss) if reduction == "mean" else np.sum(loss)


def _norm(count, reduction):
    """d reduce / d each term: 1/count for "mean", 1 for "sum"."""
    return 1.0 / count if reduction == "mean" else 1.0


REDUCTIONS = ("mean", "sum")


class Loss:
    """What every loss shares: `loss(input, target)` calls `forward`, and torch's reductions
    ("none", which gives the per-element losses, is not supported: the lockstep needs a scalar)."""

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, input, target):
        return self.forward(input, target)


class HalfSSELoss(Loss):
    """The seed's error: E = Σ ½(target − out)², summed over outputs and over the batch.

        grad_input = out − target          (N, C)

    Not torch's (there it is 0.5 · MSELoss(reduction="sum")); it takes no arguments.
    """

    def __init__(self):
        super().__init__("sum")

    def forward(self, input, target):
        self.diff = input - target  # (N, C)
        return 0.5 * np.vdot(self.diff, self.diff)  # Σ over every element

    def backward(self):
        return self.diff


class MSELoss(Loss):
    """torch.nn.MSELoss: E = reduce((out − target)²) over all N·C elements.

        grad_input = 2 (out − target) · norm     norm = 1/(N·C) for "mean", 1 for "sum"     (N, C)
    """

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        self.diff = input - target  # (N, C)
        return _reduce(self.diff * self.diff, self.reduction)

    def backward(self):
        return (2.0 * _norm(self.diff.size, self.reduction)) * self.diff


class L1Loss(Loss):
    """torch.nn.L1Loss: E = reduce(|out − target|);  grad_input = sign(out − target) · norm  (0 where equal)."""

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        self.diff = input - target  # (N, C)
        return _reduce(np.abs(self.diff), self.reduction)

    def backward(self):
        return np.sign(self.diff) * _norm(self.diff.size, self.reduction)


class SmoothL1Loss(Loss):
    """torch.nn.SmoothL1Loss(beta): with d = out − target,

        e = ½ d² / beta      where |d| < beta          grad = d / beta · norm
        e = |d| − ½ beta     elsewhere                  grad = sign(d) · norm   (±1 from |d| = beta on)

    beta = 0 is L1Loss (torch switches to l1_loss there, so the gradient at d = 0 is 0).
    """

    def __init__(self, *, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input, target):
        self.diff = d = input - target  # (N, C)
        a = np.abs(d)
        if self.beta == 0:
            return _reduce(a, self.reduction)
        return _reduce(np.where(a < self.beta, 0.5 * d * d / self.beta, a - 0.5 * self.beta), self.reduction)

    def backward(self):
        d, norm = self.diff, _norm(self.diff.size, self.reduction)
        if self.beta == 0:
            return np.sign(d) * norm
        return np.where(d <= -self.beta, -norm, np.where(d >= self.beta, norm, d * (norm / self.beta)))


class HuberLoss(Loss):
    """torch.nn.HuberLoss(delta): with d = out − target,

        e = ½ d²                   where |d| < delta      grad = d · norm
        e = delta (|d| − ½ delta)  elsewhere              grad = ±delta · norm
    """

    def __init__(self, reduction="mean", delta=1.0):  # torch's order, positional there too
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input, target):
        self.diff = d = input - target  # (N, C)
        a = np.abs(d)
        return _reduce(np.where(a < self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta)), self.reduction)

    def backward(self):
        d, norm = self.diff, _norm(self.diff.size, self.reduction)
        return np.clip(d, -self.delta, self.delta) * norm


class CrossEntropyLoss(Loss):
    """torch.nn.CrossEntropyLoss from logits x (N, C), with class-index targets (N,) or probability
    targets (N, C) — told apart as torch does, by the target's shape — and label_smoothing ε:

        log p = log_softmax(x, 1)                                stable log-sum-exp      (N, C)
        t     = one_hot(target) or target;  t ← (1 − ε) t + ε / C                        (N, C)
        e_n   = −Σ_c t_nc log p_nc;  E = mean over the N samples, or sum                 (N,)
        grad_input = (p · Σ_c t_nc − t) · norm     norm = 1/N or 1                       (N, C)

    (Σ_c t_nc is 1 for one-hot or smoothed one-hot rows; torch does not require probability rows
    to sum to 1, and neither does this.)
    """

    def __init__(self, *, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        n, c = input.shape
        logp = log_softmax(input, 1)  # (N, C)
        if target.shape != input.shape:  # class indices (N,); probabilities have the input's shape
            t = np.zeros_like(input)
            t[np.arange(n), target] = 1.0  # one-hot, (N, C)
        else:
            t = target
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + self.label_smoothing / c
        self.p, self.t = np.exp(logp), t
        return _reduce(-(t * logp).sum(axis=1), self.reduction)

    def backward(self):
        norm = _norm(len(self.t), self.reduction)
        return (self.p * self.t.sum(axis=1, keepdims=True) - self.t) * norm


class NLLLoss(Loss):
    """torch.nn.NLLLoss on log-probabilities x (N, C) with class-index targets y (N,):

        E = reduce(−x[n, y_n]) over the N samples;   grad_input = −one_hot(y) · norm    (N, C)
    """

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        self.shape, self.dtype, self.target = input.shape, input.dtype, target
        return _reduce(-input[np.arange(len(target)), target], self.reduction)

    def backward(self):
        grad = np.zeros(self.shape, self.dtype)
        grad[np.arange(len(self.target)), self.target] = -_norm(len(self.target), self.reduction)
        return grad


class BCELoss(Loss):
    """torch.nn.BCELoss on probabilities x in [0, 1] (N, C), targets t in [0, 1] (N, C):

        e = −(t · max(log x, −100) + (1 − t) · max(log(1 − x), −100))     torch's clamp of the logs
        grad_input = (x − t) / max(x (1 − x), ε) · norm                    torch's formula and floor

    ε is torch's EPSILON, 1e-12 as a C float: 9.999999960041972e-13. The logs of 0 are never taken:
    where x = 0 (or 1) the clamped value −100 is used directly.
    """

    EPSILON = float(np.float32(1e-12))

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        self.input, self.target = input, target
        log_x = np.log(input, out=np.full_like(input, -100.0), where=input > 0)
        log_1mx = np.log1p(-input, out=np.full_like(input, -100.0), where=input < 1)
        e = -(target * np.maximum(log_x, -100.0) + (1.0 - target) * np.maximum(log_1mx, -100.0))
        return _reduce(e, self.reduction)

    def backward(self):
        x, norm = self.input, _norm(self.input.size, self.reduction)
        return (x - self.target) / np.maximum(x * (1.0 - x), self.EPSILON) * norm


class BCEWithLogitsLoss(Loss):
    """torch.nn.BCEWithLogitsLoss on logits x (N, C), targets t (N, C): bce(σ(x), t) without the
    clamp, stable for any x:

        e = (1 − t) x + log(1 + exp(−x))       log1p_exp(−x) = max(−x, 0) + log1p(exp(−|x|))
        grad_input = (σ(x) − t) · norm
    """

    def __init__(self, *, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        self.input, self.target = input, target
        return _reduce((1.0 - target) * input + log1p_exp(-input), self.reduction)

    def backward(self):
        return (sigmoid(self.input) - self.target) * _norm(self.input.size, self.reduction)


def make_loss(name, args=None, replace=None):
    """The loss module for the description's `network.loss` and `network.loss_args`. The
    description's `target` ("index" | "probability") is not an argument of torch's loss (torch, and
    CrossEntropyLoss here, tell them apart by the target's shape): the registry drops it.
    `replace`: see manual.modules.substitute."""
    return substitute(LOSSES[name], replace)(**(args or {}))


# name in the description -> its class here, by torch's class name (manual/names.py's registry)
LOSSES = resolve(LOSS_REGISTRY, sys.modules[__name__])
