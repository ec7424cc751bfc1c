"""The activations, as torch.nn's classes: forward caches what backward needs, backward(grad_output)
returns grad_input; numerically stable where torch's are (the stable formulas live in
functional.py): sigmoid, silu, softplus, softmax and log_softmax never evaluate exp of a large
positive number. ACTIVATIONS maps the description's names to them, through manual/names.py's
registry (softmax and log_softmax there are Softmax(dim=1) and LogSoftmax(dim=1))."""
import math
import sys

import numpy as np

from .functional import log_softmax, sigmoid, softmax_dim, softplus
from .module import Module
from .names import ACTIVATION_REGISTRY, resolve


def erf(input):
    """torch.erf: the error function, elementwise, to about 1e-15 (numpy has none and `manual`
    takes no scipy).

        |x| < 2:  erf(x)  = 2/√π · x · exp(−x²) · Σ_n (2x²)ⁿ / (1·3·5···(2n+1))   (no cancellation)
        |x| ≥ 2:  erfc(x) = exp(−x²)/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))  (continued fraction)

    Computed in float64, returned in the input's dtype.
    """
    x = np.asarray(input)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    a = np.abs(x.astype(np.float64))
    small = a < 2.0
    s = np.where(small, a, 0.0)
    term, total = np.ones_like(s), np.ones_like(s)
    for n in range(1, 60):  # the 60th term is below 1e-17 of the sum for |x| < 2
        term = term * (2.0 * s * s) / (2 * n + 1)
        total += term
    series = (2.0 / math.sqrt(math.pi)) * s * np.exp(-s * s) * total
    b = np.where(small, 2.0, a)
    fraction = b
    for k in range(50, 0, -1):  # evaluated from the tail; 50 levels reach 1e-16 for |x| ≥ 2
        fraction = b + (k / 2.0) / fraction
    erfc = np.exp(-b * b) / math.sqrt(math.pi) / fraction
    return np.copysign(np.where(small, series, 1.0 - erfc), x).astype(dtype, copy=False)


class Sigmoid(Module):
    """out = 1 / (1 + exp(-x));  grad_x = grad_out * out * (1 - out).  Saves its output.

    Finite, without warnings, for any finite x (see `sigmoid`).
    """

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * self.out * (1.0 - self.out)


class Tanh(Module):
    """out = tanh(x);  grad_x = grad_out * (1 - out²).  Saves its output."""

    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * (1.0 - self.out * self.out)


class ReLU(Module):
    """out = max(x, 0);  grad_x = grad_out * [x > 0]  (torch's subgradient at 0 is 0).

    Written as a maximum and a product with the mask, not np.where, which is several times
    slower on a mask with no pattern. (One difference from torch: an infinite or NaN grad_out at
    an inactive unit gives NaN here where torch gives 0; the lockstep then reports it.)
    """

    def forward(self, x):
        self.mask = x > 0
        return np.maximum(x, 0.0)  # (N, features), x's dtype; NaN stays NaN, as in torch

    def backward(self, grad_output):
        return grad_output * self.mask


class Identity(Module):
    """out = x;  grad_x = grad_out."""

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


class LeakyReLU(Module):
    """out = x if x > 0 else negative_slope · x;  grad_x = grad_out · (1 if x > 0 else negative_slope).

    As torch.nn.LeakyReLU: the slope at x = 0 is negative_slope.   x, out: (N, features)
    """

    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, x * self.negative_slope)

    def backward(self, grad_output):
        return np.where(self.mask, grad_output, grad_output * self.negative_slope)


class ELU(Module):
    """out = x if x > 0 else alpha · (exp(x) − 1);  grad_x = grad_out · (1 if x > 0 else alpha · exp(x)).

    As torch.nn.ELU: expm1 for the negative branch, and the derivative alpha · exp(x) (not out + alpha,
    which loses digits for very negative x). exp is only taken of min(x, 0), so it never overflows.
    """

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def forward(self, x):
        self.mask = x > 0
        neg = np.minimum(x, 0.0)
        self.neg_slope = self.alpha * np.exp(neg)  # (N, features), the derivative where x <= 0
        return np.where(self.mask, x, self.alpha * np.expm1(neg))

    def backward(self, grad_output):
        return np.where(self.mask, grad_output, grad_output * self.neg_slope)


class GELU(Module):
    """Gaussian error linear unit, as torch.nn.GELU(approximate).

    approximate = "none":  out = x · Φ(x),  Φ(x) = ½ (1 + erf(x / √2)),   φ(x) = exp(−x²/2) / √(2π)
                           grad_x = grad_out · (Φ(x) + x · φ(x))
    approximate = "tanh":  u = √(2/π) (x + 0.044715 x³),  out = ½ x (1 + tanh u)
                           grad_x = grad_out · (½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3 · 0.044715 x²))
    x, out: (N, features)
    """

    KAPPA = 0.044715

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self.x = x
        if self.approximate == "tanh":
            self.t = np.tanh(math.sqrt(2.0 / math.pi) * (x + self.KAPPA * x * x * x))
            return 0.5 * x * (1.0 + self.t)
        self.cdf = 0.5 * (1.0 + erf(x * math.sqrt(0.5)))
        return x * self.cdf

    def backward(self, grad_output):
        x = self.x
        if self.approximate == "tanh":
            du = math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * self.KAPPA * x * x)
            return grad_output * (0.5 * (1.0 + self.t) + 0.5 * x * (1.0 - self.t * self.t) * du)
        pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return grad_output * (self.cdf + x * pdf)


class SiLU(Module):
    """out = x · σ(x);  grad_x = grad_out · σ(x) · (1 + x · (1 − σ(x))).   x, out: (N, features)"""

    def forward(self, x):
        self.x, self.s = x, sigmoid(x)
        return x * self.s

    def backward(self, grad_output):
        return grad_output * self.s * (1.0 + self.x * (1.0 - self.s))


class Softplus(Module):
    """torch.nn.Softplus(beta=1.0, threshold=20.0):

        out = log(1 + exp(beta · x)) / beta, or x where beta · x > threshold     (functional.softplus)
        grad_x = grad_out · σ(beta · x), or grad_out where beta · x > threshold
    x, out: (N, features)
    """

    def __init__(self, beta=1.0, threshold=20.0):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        z = x * self.beta
        self.linear = z > self.threshold
        self.s = sigmoid(z)
        return softplus(x, self.beta, self.threshold)

    def backward(self, grad_output):
        return np.where(self.linear, grad_output, grad_output * self.s)


class Softmax(Module):
    """torch.nn.Softmax(dim=None), over `dim` (the features, 1, for (N, C) inputs):

        out_i = exp(x_i − m) / Σ_j exp(x_j − m),   m = max_j x_j        (N, C)
        grad_x = out · (grad_out − Σ_j grad_out_j · out_j)               (N, C)   saves its output
    """

    def __init__(self, dim=None):
        self.dim = dim

    def forward(self, x):
        self.axis = axis = softmax_dim(self.dim, x.ndim)
        e = np.exp(x - x.max(axis=axis, keepdims=True))  # (N, C), every entry in (0, 1]
        self.out = e / e.sum(axis=axis, keepdims=True)
        return self.out

    def backward(self, grad_output):
        return self.out * (grad_output - (grad_output * self.out).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Module):
    """torch.nn.LogSoftmax(dim=None), over `dim` (the features, 1, for (N, C) inputs), through a
    stable log-sum-exp (functional.log_softmax):

        out_i = (x_i − m) − log Σ_j exp(x_j − m),   m = max_j x_j        (N, C)
        grad_x = grad_out − exp(out) · Σ_j grad_out_j                    (N, C)   saves its output
    """

    def __init__(self, dim=None):
        self.dim = dim

    def forward(self, x):
        self.axis = softmax_dim(self.dim, x.ndim)
        self.out = log_softmax(x, self.axis)
        return self.out

    def backward(self, grad_output):
        return grad_output - np.exp(self.out) * grad_output.sum(axis=self.axis, keepdims=True)


# name in the description -> its class here, by torch's class name (manual/names.py's registry)
ACTIVATIONS = resolve(ACTIVATION_REGISTRY, sys.modules[__name__])
