"""Layers of a multilayer perceptron in numpy, named and shaped as in torch.nn.

Every module has `forward(x)`, which caches exactly what its backward needs, and
`backward(grad_output)`, which returns `grad_input` and accumulates parameter
gradients into `Parameter.grad` with `+=` (so `zero_grad()` means what it means in torch).
All arrays are batched: the first axis is the batch, N.

Modules are called as torch's are, `module(x)` (the same as `module.forward(x)`); constructors
take torch's arguments, in torch's order, with torch's defaults (the differences are listed in each
class). The one general difference: arrays default to float64 (numpy's), where torch's default
dtype is float32.

Activations are numerically stable where torch's are: sigmoid, silu, softplus, softmax and
log_softmax never evaluate exp of a large positive number, so inputs of ±1000 give finite values
and no numpy warning (the stable formulas live in functional.py).
"""
import math
import sys

import numpy as np

from .functional import log_softmax, sigmoid, softplus


class Parameter:
    """A numpy array with a gradient beside it. `data` is updated in place by the optimizer.

    `grad` follows torch: None until a backward gives one, None again after zero_grad()
    (torch's set_to_none=True), so the first gradient of a step is taken as computed, without
    a zero array to add it to, and a gradient handed out earlier keeps its values.
    """

    def __init__(self, data, requires_grad=True):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._released = None  # the last gradient zero_grad() let go of (its storage may be reused)

    def zero_grad(self, set_to_none=True):
        """grad ← None (torch's default), or grad ← 0 in place with set_to_none=False."""
        if self.grad is None:
            return
        if set_to_none:
            self._released, self.grad = self.grad, None
        else:
            self.grad[...] = 0

    def accumulate(self, grad):
        """grad ← grad + g, as autograd's AccumulateGrad does it: the first g is kept as it is;
        later ones are added in place when nothing else holds the gradient, and into a new array
        when something does, so a gradient handed out earlier keeps its values."""
        if self.grad is None:
            self.grad = np.asarray(grad)
        elif sys.getrefcount(self.grad) == 2:  # this attribute and getrefcount's own argument
            self.grad += grad
        else:
            self.grad = self.grad + grad

    def accumulate_matmul(self, a, b):
        """grad ← grad + a @ b.

        A first gradient is computed straight into the storage of the gradient zero_grad() let go
        of, when nothing else holds that array any more (CPython's reference count, the test numpy
        itself uses to reuse temporaries): a large layer then does not allocate, and page-fault, a
        fresh array at every step, and a gradient handed out earlier still keeps its values.
        """
        if self.grad is not None:
            self.accumulate(a @ b)
            return
        spare, self._released = self._released, None
        # reused only if nothing else refers to it: just `spare` and getrefcount's own argument
        reusable = spare is not None and spare.dtype == a.dtype and sys.getrefcount(spare) == 2
        self.grad = np.matmul(a, b, out=spare if reusable else None)


class Module:
    """What every module shares with torch.nn.Module: `module(x)` calls `forward(x)`, and
    `parameters()` lists the trained parameters of `named_parameters()`."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self):
        return iter(())

    def parameters(self):
        """The trained parameters (requires_grad), the ones an optimizer gets. A frozen Parameter
        stands in for what torch keeps as a buffer (SharedBiasLinear's bias), so it is left out,
        as torch's parameters() leaves out buffers."""
        return [p for _, p in self.named_parameters() if p.requires_grad]


def _check_device(device):
    if device not in (None, "cpu"):
        raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")


class Linear(Module):
    """A fully connected layer, torch.nn.Linear(in_features, out_features, bias=True, device=None, dtype=None).

        y = x @ W.T + b          x: (N, in)  W: (out, in)  b: (out,)  y: (N, out)
        grad_W = grad_y.T @ x    (out, in)
        grad_b = grad_y.sum(0)   (out,)
        grad_x = grad_y @ W      (N, in)

    bias: a bool, as torch's (False: no bias, `self.bias` is None). dtype: None is float64
    (torch's default is float32). The parameters start at zero (torch draws them at random):
    manual.init or load_state_dict sets them. Inputs are batched, (N, in).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        if isinstance(bias, str):
            raise TypeError(f"Linear's bias is a bool, as torch's, got {bias!r} (the seed's shared frozen "
                            "bias is SharedBiasLinear; MLP takes the description's bias mode)")
        _check_device(device)
        dtype = np.float64 if dtype is None else dtype
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x):
        self.x = x  # (N, in)
        y = x @ self.weight.data.T  # (N, out)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output, input_grad=True):
        """Accumulates grad_W (and grad_b when the bias is trained); returns grad_x, or None when
        `input_grad` is False (the network's input needs none, and it would cost a third of the
        layer's work)."""
        self.weight.accumulate_matmul(grad_output.T, self.x)  # (out, in)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(grad_output.sum(axis=0))  # (out,)
        return grad_output @ self.weight.data if input_grad else None  # (N, in)

    def named_parameters(self):
        yield "weight", self.weight
        if self.bias is not None:
            yield "bias", self.bias


class SharedBiasLinear(Linear):
    """The seed's layer, as torch_ref.model.SharedBiasLinear(in_features, out_features, device, dtype):

        y = x @ W.T + b          W: (out, in)  b: ()  one scalar added to every neuron of the layer

    b is never trained: it has no gradient (grad_W and grad_x as Linear's). torch keeps it as a
    buffer; here it is a frozen Parameter (requires_grad=False), so that it is in
    named_parameters() — the state dict: `weight` (out, in) and a 0-d `bias` — and not in
    parameters(), the trained ones.
    """

    def __init__(self, in_features, out_features, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.bias = Parameter(np.zeros((), self.weight.data.dtype), requires_grad=False)


def erf(x):
    """The error function, elementwise, to about 1e-15 (numpy has none and `manual` takes no scipy).

        |x| < 2:  erf(x)  = 2/√π · x · exp(−x²) · Σ_n (2x²)ⁿ / (1·3·5···(2n+1))   (no cancellation)
        |x| ≥ 2:  erfc(x) = exp(−x²)/√π / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))  (continued fraction)

    Computed in float64, returned in x's dtype.
    """
    x = np.asarray(x)
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


def _softmax_dim(dim, ndim):
    """torch's dimension for Softmax(dim): dim=None takes torch's legacy rule (0 for 0-, 1- and
    3-dimensional inputs, else 1), which is 1, the features, for the batched (N, C) arrays here."""
    if dim is not None:
        return dim
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """torch.nn.Softmax(dim=None), over `dim` (the features, 1, for (N, C) inputs):

        out_i = exp(x_i − m) / Σ_j exp(x_j − m),   m = max_j x_j        (N, C)
        grad_x = out · (grad_out − Σ_j grad_out_j · out_j)               (N, C)   saves its output
    """

    def __init__(self, dim=None):
        self.dim = dim

    def forward(self, x):
        self.axis = axis = _softmax_dim(self.dim, x.ndim)
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
        self.axis = _softmax_dim(self.dim, x.ndim)
        self.out = log_softmax(x, self.axis)
        return self.out

    def backward(self, grad_output):
        return grad_output - np.exp(self.out) * grad_output.sum(axis=self.axis, keepdims=True)


# name in the description -> class; the classes take torch's argument names (spec.ACTIVATION_ARGS)
ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity,
               "leaky_relu": LeakyReLU, "elu": ELU, "gelu": GELU, "silu": SiLU, "softplus": Softplus,
               "softmax": Softmax, "log_softmax": LogSoftmax}


BIAS_MODES = ("per-neuron", "shared-frozen", "none")


def linear_layer(in_features, out_features, bias="per-neuron", dtype=np.float64):
    """The layer for the description's `network.bias` mode:

        "per-neuron"     Linear(in, out, bias=True)      torch's, b: (out,), trained
        "shared-frozen"  SharedBiasLinear(in, out)        the seed's, b: (), never trained
        "none"           Linear(in, out, bias=False)
    """
    if bias == "shared-frozen":
        return SharedBiasLinear(in_features, out_features, dtype=dtype)
    if bias not in BIAS_MODES:
        raise ValueError(f"bias mode must be one of {BIAS_MODES}, got {bias!r}")
    return Linear(in_features, out_features, bias=bias == "per-neuron", dtype=dtype)


class MLP(Module):
    """Linear → activation, repeated: layer k maps sizes[k] to sizes[k+1].

        net_k = a_{k-1} @ W_k.T + b_k      (N, sizes[k+1])     a_{-1} = x
        a_k   = f_k(net_k)
        delta_k = dE/dnet_k = f_k'(net_k) * (delta_{k+1} @ W_{k+1})   chain rule, (N, sizes[k+1])

    Parameter names are torch's state_dict keys: `layers.{k}.weight`, `layers.{k}.bias`.
    `bias` is the description's mode (see `linear_layer`), as torch_ref.model.MLP's.
    """

    def __init__(self, sizes, activations, bias="per-neuron", dtype=np.float64, activation_args=None):
        self.layers = [linear_layer(i, o, bias, dtype) for i, o in zip(sizes[:-1], sizes[1:])]
        activation_args = activation_args or [{} for _ in activations]
        self.activations = [ACTIVATIONS[name](**args) for name, args in zip(activations, activation_args)]
        self.deltas = [None] * len(self.layers)

    def forward(self, x):
        for layer, act in zip(self.layers, self.activations):
            x = act.forward(layer.forward(x))
        return x

    def backward(self, grad_output, input_grad=False):
        """Keeps every layer's delta; returns dE/dx only if `input_grad` (x is data, as in torch)."""
        for k in reversed(range(len(self.layers))):
            self.deltas[k] = self.activations[k].backward(grad_output)
            grad_output = self.layers[k].backward(self.deltas[k], input_grad=k > 0 or input_grad)
        return grad_output

    def named_parameters(self):
        """Every parameter, trained or frozen, under its state_dict name."""
        for k, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                yield f"layers.{k}.{name}", p

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.zero_grad(set_to_none)
