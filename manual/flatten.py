"""Reshaping modules in numpy, as torch.nn.Flatten and torch.nn.Unflatten (torch keeps them in
torch/nn/modules/flatten.py). Neither has parameters; backward gives the gradient the input's shape.
"""
import math

from .module import Module


def wrap_dim(dim, ndim):
    """A dimension index in [0, ndim) from one that may count from the end, as torch wraps it (a
    0-d array counts as having one axis); IndexError out of range, as torch's."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


class Flatten(Module):
    """torch.nn.Flatten(start_dim=1, end_dim=-1): the axes start_dim..end_dim (inclusive) become one.

        x: (*, S_start, ..., S_end, *)   y: (*, S_start · ... · S_end, *)     y = x.reshape(...)
        grad_x = grad_y.reshape(x.shape)
    """

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        self.input_shape = x.shape
        start, end = wrap_dim(self.start_dim, x.ndim), wrap_dim(self.end_dim, x.ndim)
        if start > end:
            raise ValueError(f"Flatten: start_dim ({self.start_dim}) cannot come after end_dim ({self.end_dim}) "
                             f"for an input of {x.ndim} axes")
        shape = x.shape or (1,)
        return x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def backward(self, grad_output):
        return grad_output.reshape(self.input_shape)


class Unflatten(Module):
    """torch.nn.Unflatten(dim, unflattened_size): axis `dim` becomes the axes unflattened_size.

        x: (*, S_dim, *)   y: (*, U_1, ..., U_k, *)   U_1 · ... · U_k = S_dim (one U may be −1: inferred)
        grad_x = grad_y.reshape(x.shape)

    unflattened_size: a tuple or list of ints, as torch requires.
    """

    def __init__(self, dim, unflattened_size):
        if not isinstance(unflattened_size, (tuple, list)) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in unflattened_size):
            raise TypeError(f"Unflatten: unflattened_size must be a tuple or list of ints, got {unflattened_size!r}")
        self.dim, self.unflattened_size = dim, unflattened_size

    def forward(self, x):
        self.input_shape = x.shape
        d = wrap_dim(self.dim, x.ndim)
        sizes = tuple(self.unflattened_size)
        known = math.prod(s for s in sizes if s != -1)
        fits = known == x.shape[d] if -1 not in sizes else sizes.count(-1) == 1 and known and x.shape[d] % known == 0
        if not fits:
            raise ValueError(f"Unflatten: unflattened_size {list(sizes)} does not fit axis {self.dim} of "
                             f"size {x.shape[d]} (shape {list(x.shape)})")
        return x.reshape(x.shape[:d] + sizes + x.shape[d + 1:])

    def backward(self, grad_output):
        return grad_output.reshape(self.input_shape)
