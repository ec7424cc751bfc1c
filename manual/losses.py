"""Losses in numpy, as torch.nn's loss modules: `forward(input, target)` returns the loss as a
0-d array and caches what the gradient needs; `backward()` returns dE/dinput, the input's shape.

`reduction` is torch's: "mean" averages the per-element (or, for cross_entropy and nll, the
per-sample) losses, "sum" adds them; the seed's `half-sse` is Σ ½(t − o)², summed. "batch-mean"
(this project's, not torch's: `make_loss` builds it) is the "sum" divided by the batch's N, the
input's first axis: a sum over the outputs averaged over the samples, as much real code writes it,
e.g. ½·Σ_ij (o − t)² / N for half-sse.
Targets are (N, C) arrays, except the class indices of cross_entropy and nll: (N,) integers
(cross_entropy and nll also take torch's (N, C, d1, ...) inputs with (N, d1, ...) targets, and
ignore_index).

Arguments are keyword-only where torch's constructor has deprecated or unsupported arguments before
them (`MSELoss(size_average, reduce, reduction)`): `MSELoss("sum")` would mean something else in
torch, so here it is a TypeError rather than a silent difference. torch's `weight`
and `pos_weight` are not supported. A loss is called as torch's, `loss(input,
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

    Not torch's (there it is 0.5 · MSELoss(reduction="sum")); its one reduction is "sum"
    (make_loss divides it by N for "batch-mean").
    """

    def __init__(self, *, reduction="sum"):
        if reduction != "sum":
            raise ValueError(f"HalfSSELoss is a sum: reduction must be 'sum', got {reduction!r}")
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


def classes_last(x):
    """An input of torch's class-axis layout as rows of classes: (C,) -> (1, C), (N, C) as it is,
    (N, C, d1, ...) -> (N·d1·..., C) (the class axis moved last); undo with `classes_back`."""
    if x.ndim == 1:
        return x[None]
    if x.ndim == 2:
        return x
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def classes_back(rows, shape):
    """The (M, C) rows of classes_last back in the layout of an input of `shape`."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],)), -1, 1)


def kept_indices(target, ignore_index, classes):
    """(rows, classes) of the class-index targets (flattened) that count: those other than
    ignore_index; a counted index outside [0, classes) is refused as torch refuses it."""
    target = np.asarray(target).reshape(-1)
    rows = np.flatnonzero(target != ignore_index)
    kept = target[rows]
    bad = kept[(kept < 0) | (kept >= classes)]
    if bad.size:
        raise IndexError(f"Target {bad[0]} is out of bounds.")
    return rows, kept


def reduce_counted(total, count, reduction):
    """torch's reduction of a sum over `count` counted terms: total / count for "mean" (NaN when
    nothing counts, as torch's 0 / 0), total for "sum"; in total's dtype."""
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(total, count, dtype=np.result_type(total))


def per_term(count, reduction):
    """d reduction / d each counted term: 1/count for "mean" (0 when nothing counts: torch's
    gradient is then 0), 1 for "sum"."""
    if reduction == "sum":
        return 1.0
    return 1.0 / count if count else 0.0


class CrossEntropyLoss(Loss):
    """torch.nn.CrossEntropyLoss from logits x (N, C) or (N, C, d1, ...) (or (C,), unbatched), with
    class-index targets (N, d1, ...) or probability targets of x's shape — told apart as torch does,
    by the target's shape — ignore_index and label_smoothing ε. With x as M rows of C classes (the
    class axis moved last, M = N·d1·...):

        log p = log_softmax(x) over the classes                  stable log-sum-exp      (M, C)
        t     = one_hot(target) or target;  t ← (1 − ε) t + ε / C                        (M, C)
                a row whose target is ignore_index: t = 0 (it contributes nothing)
        e_m   = −Σ_c t_mc log p_mc;  E = Σ_m e_m / K for "mean", Σ_m e_m for "sum"
        grad_input = (p · Σ_c t_mc − t) / K (or · 1)                                     x's shape

    K is the number of rows that count: those whose target is not ignore_index (every row for
    probability targets, which ignore_index does not apply to, as torch's). Every row ignored:
    "mean" gives NaN, and a zero gradient, as torch. (Σ_c t_mc is 1 for one-hot or smoothed
    one-hot rows; torch does not require probability rows to sum to 1, and neither does this.)
    torch's `weight` is not supported.
    """

    def __init__(self, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        self.shape = input.shape
        x = classes_last(input)
        c = x.shape[1]
        logp = log_softmax(x, 1)  # (M, C)
        eps = self.label_smoothing
        if target.shape != input.shape:  # class indices; probabilities have the input's shape
            rows, kept = kept_indices(target, self.ignore_index, c)
            t = np.zeros_like(x)
            t[rows, kept] = 1.0 - eps  # one-hot, smoothed, on the rows that count
            if eps:
                t[rows] += eps / c
            self.count = len(rows)
        else:
            t = classes_last(target)
            if eps:
                t = t * (1.0 - eps) + eps / c
            self.count = len(t)
        self.p, self.t = np.exp(logp), t
        return reduce_counted(-(t * logp).sum(), self.count, self.reduction)

    def backward(self):
        grad = (self.p * self.t.sum(axis=1, keepdims=True) - self.t) * per_term(self.count, self.reduction)
        return classes_back(grad, self.shape)


class NLLLoss(Loss):
    """torch.nn.NLLLoss on log-probabilities x (N, C) or (N, C, d1, ...) (or (C,)) with class-index
    targets y (N, d1, ...) and ignore_index; x as M rows of C classes (as CrossEntropyLoss's):

        E = Σ_m −x[m, y_m] / K for "mean", the sum for "sum"     over the K rows with y_m ≠ ignore_index
        grad_input = −one_hot(y) / K (or · 1), 0 on the ignored rows                     x's shape

    Every row ignored: "mean" gives NaN and a zero gradient, as torch. `weight` is not supported.
    """

    def __init__(self, *, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        self.shape, self.dtype = input.shape, input.dtype
        x = classes_last(input)
        self.rows, self.kept = kept_indices(target, self.ignore_index, x.shape[1])
        self.m = x.shape
        return reduce_counted(-x[self.rows, self.kept].sum(), len(self.rows), self.reduction)

    def backward(self):
        grad = np.zeros(self.m, self.dtype)
        grad[self.rows, self.kept] = -per_term(len(self.rows), self.reduction)
        return classes_back(grad, self.shape)


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


class BatchMean:
    """reduction = "batch-mean": the loss made with "sum", divided by the batch's N (the input's
    first axis). E = sum / N;  grad_input = grad_sum / N."""

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, input, target):
        return self.forward(input, target)

    def forward(self, input, target):
        self.n = input.shape[0]
        return self.loss.forward(input, target) / self.n

    def backward(self):
        return self.loss.backward() / self.n


def make_loss(name, args=None, replace=None):
    """The loss module for the description's `network.loss` and `network.loss_args`. The
    description's `target` ("index" | "probability") is not an argument of torch's loss (torch, and
    CrossEntropyLoss here, tell them apart by the target's shape): the registry drops it.
    reduction = "batch-mean" is the loss with "sum" in a BatchMean. `replace`: see
    manual.modules.substitute."""
    args = dict(args or {})
    if args.get("reduction") == "batch-mean":
        return BatchMean(make_loss(name, {**args, "reduction": "sum"}, replace))
    return substitute(LOSSES[name], replace)(**args)


# name in the description -> its class here, by torch's class name (manual/names.py's registry)
LOSSES = resolve(LOSS_REGISTRY, sys.modules[__name__])
