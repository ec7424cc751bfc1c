"""Layer and group normalisation in numpy, as torch.nn.LayerNorm and torch.nn.GroupNorm
(torch keeps them in torch/nn/modules/normalization.py). Batch normalisation is in batchnorm.py.

Both normalise with the biased variance of the elements they normalise together, then apply an
elementwise affine map; backward goes through the mean and the variance (the closed form below),
vectorised over every group at once.
"""
import math

import numpy as np

from .module import Module
from .modules import Parameter


def resolve_dtype(device, dtype):
    """The numpy dtype for torch's (device, dtype) arguments: dtype None is float64 (numpy's default;
    torch's is float32); a device other than None or "cpu" is refused, as manual's Linear does."""
    if device not in (None, "cpu"):
        raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")
    return np.dtype(np.float64 if dtype is None else dtype)


def standardize(x, axes, eps):
    """(x̂, rstd, mean, var): x̂ = (x − mean) · rstd, rstd = 1 / √(var + eps), mean and the biased var
    over `axes` (kept as size-1 axes so that they broadcast; two passes, not E[x²] − E[x]²)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)  # biased: divided by the count
    rstd = 1.0 / np.sqrt(var + eps)
    return centred * rstd, rstd, mean, var


def standardize_backward(grad_xhat, xhat, rstd, axes):
    """dE/dx from dE/dx̂ for x̂ = standardize(x, axes), through the mean and the variance (n the count
    of elements over `axes`):

        dE/dx = rstd · (g − mean(g) − x̂ · mean(g · x̂))      g = dE/dx̂, the means over `axes`
    """
    return rstd * (grad_xhat - grad_xhat.mean(axis=axes, keepdims=True)
                   - xhat * (grad_xhat * xhat).mean(axis=axes, keepdims=True))


def accumulate_affine(weight, bias, grad_output, xhat, axes):
    """Adds grad_weight = Σ grad_out · x̂ and grad_bias = Σ grad_out (sums over `axes`, the axes the
    affine parameters are broadcast along) to the parameters that are there and trained."""
    if weight is not None and weight.requires_grad:
        weight.accumulate((grad_output * xhat).sum(axis=axes).reshape(weight.data.shape))
    if bias is not None and bias.requires_grad:
        bias.accumulate(grad_output.sum(axis=axes).reshape(bias.data.shape))


class LayerNorm(Module):
    """torch.nn.LayerNorm(normalized_shape, eps=1e-05, elementwise_affine=True, bias=True, device=None,
    dtype=None): normalises over the last D = len(normalized_shape) axes of each sample.

        x: (*, *normalized_shape)   weight, bias: normalized_shape   y: x's shape
        x̂ = (x − mean) / √(var + eps)     mean, biased var over the last D axes
        y = x̂ · weight + bias
        grad_weight = Σ_* grad_y · x̂,   grad_bias = Σ_* grad_y       (sums over the leading axes)
        grad_x = rstd · (g − mean(g) − x̂ · mean(g · x̂)),   g = grad_y · weight, means over the last D axes

    normalized_shape: an int or a sequence of ints (stored as a tuple, as torch's). weight starts at
    1 and bias at 0, as torch's; elementwise_affine=False: neither (both None); bias=False: no bias.
    """

    def __init__(self, normalized_shape, eps=1e-05, elementwise_affine=True, bias=True, device=None, dtype=None):
        dtype = resolve_dtype(device, dtype)
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        d = len(self.normalized_shape)
        if x.ndim < d or tuple(x.shape[x.ndim - d:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm: normalized_shape={list(self.normalized_shape)} expects an input of "
                             f"shape [*, {', '.join(map(str, self.normalized_shape))}], got {list(x.shape)}")
        self.axes = tuple(range(x.ndim - d, x.ndim))
        self.xhat, self.rstd, _, _ = standardize(x, self.axes, self.eps)
        y = self.xhat * self.weight.data if self.weight is not None else self.xhat.copy()
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        leading = tuple(range(grad_output.ndim - len(self.normalized_shape)))
        accumulate_affine(self.weight, self.bias, grad_output, self.xhat, leading)
        g = grad_output * self.weight.data if self.weight is not None else grad_output
        return standardize_backward(g, self.xhat, self.rstd, self.axes)

    def named_parameters(self, prefix=""):
        if self.weight is not None:
            yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias


class GroupNorm(Module):
    """torch.nn.GroupNorm(num_groups, num_channels, eps=1e-05, affine=True, device=None, dtype=None):
    the C channels are split into num_groups groups of C/G consecutive channels; each sample's
    group is normalised over its channels and spatial positions together.

        x: (N, C, *)   weight, bias: (C,)   y: x's shape       (viewed as (N, G, C/G · Π*) to normalise)
        x̂ = (x − mean) / √(var + eps)     mean, biased var per sample and group
        y = x̂ · weight[c] + bias[c]
        grad_weight = Σ_{N,*} grad_y · x̂,   grad_bias = Σ_{N,*} grad_y
        grad_x = rstd · (g − mean(g) − x̂ · mean(g · x̂)),   g = grad_y · weight[c], means per sample and group

    weight starts at 1 and bias at 0, as torch's; affine=False: neither (both None).
    """

    def __init__(self, num_groups, num_channels, eps=1e-05, affine=True, device=None, dtype=None):
        dtype = resolve_dtype(device, dtype)
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expects an input of shape (N, {self.num_channels}, *), got {list(x.shape)}")
        n, spatial = x.shape[0], math.prod(x.shape[2:])
        if n * (self.num_channels // self.num_groups) * spatial == 1:  # torch's _verify_batch_size on its view
            raise ValueError(f"GroupNorm: expected more than 1 value per channel when training, got input size {list(x.shape)}")
        grouped = x.reshape(n, self.num_groups, -1)  # (N, G, C/G · Π*)
        xhat, self.rstd, _, _ = standardize(grouped, (2,), self.eps)
        self.xhat = xhat.reshape(x.shape)
        y = self.xhat * self.channel(self.weight) if self.weight is not None else self.xhat.copy()
        if self.bias is not None:
            y += self.channel(self.bias)
        return y

    def channel(self, parameter):
        """A (C,) parameter shaped (C, 1, ..., 1) to broadcast against the cached input's (N, C, *)."""
        return parameter.data.reshape((-1,) + (1,) * (self.xhat.ndim - 2))

    def backward(self, grad_output):
        accumulate_affine(self.weight, self.bias, grad_output, self.xhat, (0,) + tuple(range(2, grad_output.ndim)))
        g = grad_output * self.channel(self.weight) if self.weight is not None else grad_output
        n = g.shape[0]
        grad = standardize_backward(g.reshape(n, self.num_groups, -1), self.xhat.reshape(n, self.num_groups, -1),
                                  self.rstd, (2,))
        return grad.reshape(grad_output.shape)

    def named_parameters(self, prefix=""):
        if self.weight is not None:
            yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias
