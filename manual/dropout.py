"""Dropout in numpy, as torch.nn.Dropout and torch.nn.Dropout2d (torch keeps them in
torch/nn/modules/dropout.py), with the mask handed in.

Which elements are dropped is not computed but agreed: both sides of the lockstep must drop the
same ones, and numpy cannot reproduce torch's generator. So each module has an attribute `mask`, a
boolean keep-mask that whoever drives it (the trainer) sets before each forward, drawn by numpy
from the description's seed and handed to torch's side too. When `mask` is None, the module draws
one itself from its `generator` (a numpy Generator, settable; keep with probability 1 − p).

    training:  y = x · (keep / (1 − p))      grad_x = grad_y · (keep / (1 − p))     torch's scaling
               p == 1: y = x · 0 (zeros, as torch)      p == 0: y = x (the identity, mask unused)
    eval:      y = x                          grad_x = grad_y

A handed mask stays until it is replaced or set back to None (it is not consumed); the mask a
forward used is `last_mask` (None where it used none), and backward uses that one.
"""
import numpy as np

from .module import Module


class Dropout(Module):
    """torch.nn.Dropout(p=0.5, inplace=False): zeroes each element independently.

        x, y: any shape (batch first)     mask: bool, x's shape (True keeps the element)
        y = x · keep / (1 − p)            grad_x = grad_y · keep / (1 − p)

    inplace=True writes y into x, as torch's (x must then be a writable float array).
    """

    def __init__(self, p=0.5, inplace=False):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace
        self.mask = None
        self.last_mask = None
        self.generator = np.random.default_rng()

    def mask_shape(self, x):
        """The shape of the keep-mask for input x: x's own (one draw per element)."""
        return x.shape

    def expand(self, keep, ndim):
        """The keep-mask shaped to broadcast against an input of `ndim` axes."""
        return keep

    def keep_mask(self, x):
        """The handed mask, checked, or a fresh draw from `generator`: keep with probability 1 − p."""
        shape = self.mask_shape(x)
        if self.mask is None:
            return self.generator.random(shape) >= self.p
        keep = np.asarray(self.mask)
        if keep.dtype != np.bool_ or keep.shape != shape:
            raise ValueError(f"{type(self).__name__}: mask must be a boolean array of shape {shape}, "
                             f"got {keep.dtype} {keep.shape}")
        return keep

    def forward(self, x):
        self.last_mask = self.scale = None
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            self.scale = np.zeros((), x.dtype)
        else:
            self.last_mask = self.keep_mask(x)
            # torch's noise: the mask in x's dtype divided by (1 − p), then one product with x
            self.scale = self.expand(self.last_mask.astype(x.dtype) / (1.0 - self.p), x.ndim)
        return np.multiply(x, self.scale, out=x if self.inplace else None)

    def backward(self, grad_output):
        return grad_output if self.scale is None else grad_output * self.scale


class Dropout2d(Dropout):
    """torch.nn.Dropout2d(p=0.5, inplace=False): zeroes whole channels.

        x, y: (N, C, H, W)     mask: bool, (N, C), broadcast over the spatial axes
        y = x · keep[n, c] / (1 − p)        grad_x = grad_y · keep[n, c] / (1 − p)

    As torch's, a 3-D input is read as (N, C, L) (torch warns that this will change), and any
    input of two or more axes as (N, C, *).
    """

    def mask_shape(self, x):
        if x.ndim < 2:
            raise ValueError(f"Dropout2d: expects an input of shape (N, C, H, W), got {list(x.shape)}")
        return x.shape[:2]

    def expand(self, keep, ndim):
        return keep.reshape(keep.shape + (1,) * (ndim - 2))
