"""The sliding windows that convolution and pooling (conv.py, pooling.py) are built on, in numpy.

Every operation here is over (N, C, H, W) arrays; the one-dimensional modules run as the
two-dimensional ones over (N, C, 1, L). Nothing loops in Python over samples, channels or
positions: a window is a strided view (numpy.lib.stride_tricks.as_strided), so that

    window_view(x_padded, kernel, stride, dilation)[n, c, h, w, i, j]
        = x_padded[n, c, h·sh + i·dh, w·sw + j·dw]

and its adjoint (what a gradient flows back through, and what a transposed convolution is) is
another such view, over the gradient spread out by the stride (`adjoint_windows`).

Convolution copies the windows once into columns (`im2col`, numpy's copy in C, into a buffer
reused between steps) and, for a strided convolution, sends column gradients back onto the input
as a sum over the kernel's k·k offsets of strided slices (`col2im`): a loop bounded by the kernel
size, never over samples, channels or positions, and never over the zeros a spread-out gradient
would hold.
"""
import sys

import numpy as np
from numpy.lib.stride_tricks import as_strided


def ntuple(value, n, name):
    """An int or a sequence of n ints as a tuple of n ints, as torch's _single/_pair normalise
    kernel_size, stride, padding and dilation; anything else is refused, naming the argument."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")


def check_positive(values, name):
    """kernel_size, stride and dilation are at least 1 (torch refuses 0 and negatives)."""
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {values}")


def check_input(x, ndim, name):
    """A batched input: (N, C, L) for the 1d modules, (N, C, H, W) for the 2d ones."""
    x = np.asarray(x)
    if x.ndim != ndim:
        layout = "(N, C, L)" if ndim == 3 else "(N, C, H, W)"
        raise ValueError(f"{name} takes a batched input {layout}, got shape {x.shape}")
    return x


def pad_sides(x, pads, value=0.0):
    """x (N, C, H, W) padded by pads = ((top, bottom), (left, right)) with `value`; a negative
    pad crops that many rows or columns instead (the adjoint of a padding)."""
    crop = tuple(slice(max(-a, 0), x.shape[k + 2] - max(-b, 0)) for k, (a, b) in enumerate(pads))
    x = x[(slice(None), slice(None)) + crop]
    grow = ((0, 0), (0, 0)) + tuple((max(a, 0), max(b, 0)) for a, b in pads)
    if any(a or b for a, b in grow):
        x = np.pad(x, grow, constant_values=value)
    return x


def window_view(x, kernel, stride, dilation, out_size=None):
    """The windows of x (N, C, Hp, Wp), already padded, as a read-only view
    (N, C, Ho, Wo, kh, kw): view[n, c, h, w, i, j] = x[n, c, h·sh + i·dh, w·sw + j·dw], with
    Ho = (Hp − dh·(kh − 1) − 1) // sh + 1 (or `out_size`, at most that)."""
    n, c = x.shape[:2]
    size = []
    for k, (length, kk, s, d) in enumerate(zip(x.shape[2:], kernel, stride, dilation)):
        extent = d * (kk - 1) + 1
        if length < extent:
            raise ValueError(f"the padded input is {tuple(x.shape[2:])}, smaller than the kernel's extent "
                             f"(kernel_size {tuple(kernel)}, dilation {tuple(dilation)})")
        full = (length - extent) // s + 1
        size.append(full if out_size is None else min(full, out_size[k]))
    sn, sc, sh, sw = x.strides
    shape = (n, c, size[0], size[1], kernel[0], kernel[1])
    strides = (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    return as_strided(x, shape, strides, writeable=False)


def adjoint_windows(g, size, kernel, stride, padding, dilation):
    """The windows the gradient of a windowed operation flows back through:

        view[n, c, h, w, i, j] = g[n, c, ho, wo]  where h = ho·sh − ph + i·dh and w = wo·sw − pw + j·dw,
                                 0                where no output position put offset (i, j) at (h, w)

    for an input of `size` (H, W) and an output g (N, C, Ho, Wo) with (top, left) `padding`.
    So the adjoint of Σ_{i,j} w[i, j]·x[h·s − p + i·d] is Σ_{i,j} w[i, j]·view[.., i, j]:
    conv's grad_input and ConvTranspose2d's forward contract it with the weight, AvgPool2d's
    backward sums it. Built as a convolution's transpose is: g spread out by the stride (zeros
    between), padded by d·(k − 1) − p on the left (cropped where negative) and to length
    H + d·(k − 1) on the right, then `window_view` with stride 1, its kernel axes reversed.
    A strided operation costs stride² times its output's share here (the zeros between)."""
    n, c, ho, wo = g.shape
    spread = np.zeros((n, c, (ho - 1) * stride[0] + 1, (wo - 1) * stride[1] + 1), g.dtype)
    spread[:, :, ::stride[0], ::stride[1]] = g
    pads = []
    for length, out, k, p, d in zip(size, spread.shape[2:], kernel, padding, dilation):
        left = d * (k - 1) - p
        pads.append((left, length + d * (k - 1) - out - left))
    return window_view(pad_sides(spread, pads), kernel, (1, 1), dilation)[..., ::-1, ::-1]


def im2col(x_padded, kernel, stride, dilation, out_size=None, buffer=None):
    """The windows of x_padded (N, C, Hp, Wp) copied into columns (N, C, kh, kw, Ho, Wo):

        columns[n, c, i, j, h, w] = x_padded[n, c, h·sh + i·dh, w·sw + j·dw]

    laid out so that, per sample, (C·kh·kw, Ho·Wo) is one contiguous matrix (the operand of the
    product with the weight) and the copy's inner loop runs along a row of the input. `buffer`,
    an array a previous call returned, is written over when it has the shape and dtype and
    nothing but the caller holds it (CPython's reference count: the caller's name and the
    argument), so a training step does not allocate, and page-fault, its columns afresh."""
    windows = window_view(x_padded, kernel, stride, dilation, out_size)
    n, c, ho, wo, kh, kw = windows.shape
    shape = (n, c, kh, kw, ho, wo)
    reusable = (buffer is not None and buffer.shape == shape and buffer.dtype == x_padded.dtype
                and sys.getrefcount(buffer) <= 3)  # the caller's reference, this frame's, getrefcount's
    columns = buffer if reusable else np.empty(shape, x_padded.dtype)
    np.copyto(columns, windows.transpose(0, 1, 4, 5, 2, 3))
    return columns


def col2im(columns, padded_size, stride, dilation):
    """The adjoint of `im2col`: columns (N, C, kh, kw, Ho, Wo) summed back onto the padded input,

        out[n, c, h·sh + i·dh, w·sw + j·dw] += columns[n, c, i, j, h, w]     for every i, j, h, w

    out: (N, C, Hp, Wp). One strided-slice addition per kernel offset (i, j): no work on the
    positions a stride skips."""
    n, c, kh, kw, ho, wo = columns.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros((n, c) + tuple(padded_size), columns.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw] += columns[:, :, i, j]
    return out


def pool_output_size(length, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling_output_shape: ⌊(L + 2p − d·(k − 1) − 1 + (s − 1 if ceil_mode)) / s⌋ + 1, less
    one in ceil_mode when the last window would start past the input and its left padding."""
    out = (length + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    return out
