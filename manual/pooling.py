"""Pooling in numpy, as torch.nn's: MaxPool1d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.

Max and average pooling read their windows through a strided view (manual/windows.py); the
gradient of a max goes to the window's argmax through one np.bincount (overlapping windows add
up), an average's through the adjoint windows of the gradient; adaptive pooling's windows,
of uneven sizes, are two 0/1 matrices (the sums are matrix products). Output sizes follow
torch's rule (windows.pool_output_size), ceil_mode included. The arguments are kept as given,
as torch keeps them (stride None becomes kernel_size). No Python loop over samples, channels or
positions; the one-dimensional pooling runs as the two-dimensional one over (N, C, 1, L).
"""
import numpy as np

from .module import Module
from .windows import adjoint_windows, check_input, check_positive, ntuple, pad_sides, pool_output_size, window_view


def _pool_geometry(module, dims):
    """(kernel, stride, padding, dilation) of a pooling module as 2-d tuples, checked as torch
    checks them: positive kernel, stride and dilation; padding at most half the kernel."""
    k = ntuple(module.kernel_size, dims, "kernel_size")
    s = ntuple(module.stride, dims, "stride")
    p = ntuple(module.padding, dims, "padding")
    d = ntuple(getattr(module, "dilation", 1), dims, "dilation")
    for name, value in (("kernel_size", k), ("stride", s), ("dilation", d)):
        check_positive(value, name)
    if any(pp < 0 or pp > kk // 2 for pp, kk in zip(p, k)):
        raise ValueError(f"padding should be at most half of kernel size, got padding={p} and kernel_size={k}")
    lift = (lambda t, fill: (fill,) * (2 - dims) + t)  # the 1-d pooling runs over (N, C, 1, L)
    return lift(k, 1), lift(s, 1), lift(p, 0), lift(d, 1)


def _output_size(x, kernel, stride, padding, dilation, ceil_mode, name):
    """(Ho, Wo) by torch's rule; a window that does not fit is refused, as torch refuses it."""
    size = tuple(pool_output_size(length, k, s, p, d, ceil_mode)
                 for length, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation))
    if min(size) < 1:
        raise ValueError(f"{name}: input of shape {x.shape} gives an output of size {size}: too small")
    return size


def _padded(x, size, kernel, stride, padding, dilation, value):
    """x padded on the top/left by `padding` and on the bottom/right as far as the last window
    reaches (beyond the padding in ceil_mode, never more than needed)."""
    pads = [(p, max(0, (o - 1) * s + d * (k - 1) + 1 - length - p))
            for length, o, k, s, p, d in zip(x.shape[2:], size, kernel, stride, padding, dilation)]
    return pad_sides(x, pads, value)


class _MaxPoolNd(Module):
    """What MaxPool1d and MaxPool2d share (torch's _MaxPoolNd)."""

    _dims = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode
        self._geometry = _pool_geometry(self, self._dims)

    def forward(self, input):
        """y = the window's maximum; keeps the argmax as torch's indices (h·W + w in the input)."""
        name = type(self).__name__
        x = check_input(input, self._dims + 2, name)
        x = x[:, :, None] if self._dims == 1 else x
        kernel, stride, padding, dilation = self._geometry
        size = _output_size(x, kernel, stride, padding, dilation, self.ceil_mode, name)
        xp = _padded(x, size, kernel, stride, padding, dilation, -np.inf)
        if xp.shape == x.shape:  # no padding: every window lies in the input
            y, offset = _scan_max(x, kernel, stride, dilation, size)
        else:
            n, c = x.shape[:2]
            windows = window_view(xp, kernel, stride, dilation, size).reshape(n, c, size[0], size[1], -1)
            inside = np.zeros((1, 1) + xp.shape[2:], bool)
            inside[:, :, padding[0]:padding[0] + x.shape[2], padding[1]:padding[1] + x.shape[3]] = True
            inside = window_view(inside, kernel, stride, dilation, size).reshape(size[0], size[1], -1)
            y = windows.max(axis=-1)
            offset = self._argmax(windows, y, inside)
        self.offset, self.padded = offset, xp.shape != x.shape
        self.indices = self._input_index(offset, x.shape, kernel, stride, padding, dilation) \
            if self.return_indices or self.padded or not _disjoint(kernel, stride, dilation) else None
        self.input_shape, self.dtype = x.shape, x.dtype
        y = y[:, :, 0] if self._dims == 1 else y
        if self.return_indices:
            return y, (self.indices[:, :, 0] if self._dims == 1 else self.indices)
        return y

    @staticmethod
    def _argmax(windows, y, inside):
        """The offset in the window torch routes the gradient to: the first maximum in the input
        (row by row; padding never), or, where the window holds a NaN, its last NaN (torch's
        scan keeps a value when `val > maxval || isnan(val)`)."""
        offset = np.argmax((windows == y[..., None]) & inside, axis=-1)
        nan = np.isnan(windows)
        if nan.any():
            last = windows.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
            offset = np.where(nan.any(axis=-1), last, offset)
        return offset

    @staticmethod
    def _input_index(offset, shape, kernel, stride, padding, dilation):
        """Window offsets (N, C, Ho, Wo) as flat indices h·W + w of the unpadded input."""
        i, j = np.divmod(offset, kernel[1])
        ho, wo = offset.shape[2:]
        h = (np.arange(ho) * stride[0] - padding[0])[:, None] + i * dilation[0]
        w = (np.arange(wo) * stride[1] - padding[1]) + j * dilation[1]
        return (h * shape[3] + w).astype(np.int64)

    def backward(self, grad_output):
        """grad_x[n, c, index] = Σ of grad_y over the windows whose argmax is at index: written
        straight through the windows' slices where no two windows share an element (one slice per
        kernel offset), summed by one np.bincount where they do."""
        g = grad_output[:, :, None] if self._dims == 1 else grad_output
        kernel, stride, _, dilation = self._geometry
        if self.indices is None:  # no padding, disjoint windows
            grad = np.zeros(self.input_shape, self.dtype)
            finite = np.isfinite(g.sum())  # else where(), so that inf · 0 leaves no NaN off the argmax
            for t, window in enumerate(_offsets(grad, kernel, stride, dilation, self.offset.shape[2:])):
                hit = self.offset == t
                if finite:
                    np.multiply(hit, g, out=window)  # several times faster than np.where
                else:
                    window[...] = np.where(hit, g, 0)
            return grad[:, :, 0] if self._dims == 1 else grad
        n, c, h, w = self.input_shape
        plane = h * w
        where = (np.arange(n * c)[:, None] * plane + self.indices.reshape(n * c, -1)).ravel()
        grad = np.bincount(where, weights=np.asarray(g, np.float64).ravel(), minlength=n * c * plane)
        grad = grad.reshape(self.input_shape).astype(self.dtype, copy=False)
        return grad[:, :, 0] if self._dims == 1 else grad


def _disjoint(kernel, stride, dilation):
    """Whether no two windows share an element: each stride at least the kernel's extent."""
    return all(s >= d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _offsets(x, kernel, stride, dilation, size):
    """For each kernel offset (i, j), row by row, the view x[:, :, h·sh + i·dh, w·sw + j·dw] over
    the output positions (h, w) < size: one strided slice (writeable if x is)."""
    (ho, wo), (sh, sw), (dh, dw) = size, stride, dilation
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield x[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]


def _scan_max(x, kernel, stride, dilation, size):
    """The windows' maxima and their offsets (i·kw + j) by torch's own scan, for windows that lie
    in x: a value replaces the running maximum when `val > maxval || isnan(val)`, so a tie keeps
    the first, and a NaN wins (the last NaN of its window). The windows are copied once, offset
    by offset, into contiguous planes (kh·kw, N, C, Ho, Wo), so that the scan's passes are over
    contiguous arrays; the offset is updated by arithmetic, several times faster than np.where."""
    windows = window_view(x, kernel, stride, dilation, size)
    n, c, ho, wo, kh, kw = windows.shape
    planes = np.ascontiguousarray(windows.transpose(4, 5, 0, 1, 2, 3)).reshape(kh * kw, n, c, ho, wo)
    nan = np.isnan(x.max())  # max propagates NaN: one pass to tell whether the scan must look for it
    best = planes[0].copy()
    offset = np.zeros(best.shape, np.uint8 if kh * kw <= 256 else np.intp)
    for t in range(1, kh * kw):
        take = planes[t] > best
        if nan:
            take |= np.isnan(planes[t])
        np.maximum(best, planes[t], out=best)  # NaN stays, as torch's maxval once it is NaN
        offset += take * (t - offset)  # offset ← t where taken (modular in uint8: exact)
    return best, offset


class MaxPool1d(_MaxPoolNd):
    """torch.nn.MaxPool1d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):

        y[n, c, l] = max_{i<k} x_pad[n, c, l·s + i·d]          x_pad: −inf on either side
        grad_x[n, c, t] = Σ_{l: argmax(n, c, l) = t} grad_y[n, c, l]

    x: (N, C, L), y: (N, C, L_out). The argmax is torch's: the first maximum in the window (a
    tie goes to the earlier element), never the padding; a NaN wins. return_indices: forward
    returns (y, indices) with torch's indices. Computed as MaxPool2d over (N, C, 1, L).
    """

    _dims = 1


class MaxPool2d(_MaxPoolNd):
    """torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):

        y[n, c, h, w] = max_{i,j} x_pad[n, c, h·sh + i·dh, w·sw + j·dw]          x_pad: −inf around
        grad_x[n, c, t] = Σ_{(h, w): argmax(n, c, h, w) = t} grad_y[n, c, h, w]

    x: (N, C, H, W), y: (N, C, H_out, W_out), H_out by torch's rule (ceil_mode: rounded up, but
    the last window starts inside the input or its left padding). The argmax is torch's: the
    first maximum in the window row by row (ties go to the earlier element), never the padding;
    a NaN wins; overlapping windows add their gradients. padding ≤ kernel_size // 2.
    return_indices: forward returns (y, indices), indices h·W + w as torch's.
    """


class AvgPool2d(Module):
    """torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
    divisor_override=None):

        y[n, c, h, w] = Σ_{i,j} x_pad[n, c, h·sh + i, w·sw + j] / divisor[h, w]     x_pad: zeros around
        grad_x = the adjoint of that window sum applied to grad_y / divisor

    divisor: divisor_override if given; else, with count_include_pad, the window's size clipped
    to the padded input (smaller only for a ceil_mode window past it); without, the number of
    input elements in the window. Shapes and ceil_mode as MaxPool2d's.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override
        if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(
                divisor_override, (int, np.integer)) or divisor_override == 0):
            raise ValueError(f"divisor_override must be a non-zero int or None, got {divisor_override!r}")
        self._geometry = _pool_geometry(self, 2)[:3]

    def _divisor(self, shape, size, dtype):
        """(Ho, Wo): what each window's sum is divided by, as torch's avg_pool2d computes it."""
        if self.divisor_override is not None:
            return np.full(size, self.divisor_override, dtype)
        counts = []
        for length, o, k, s, p in zip(shape[2:], size, *self._geometry):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, length + p)
            counts.append(end - start if self.count_include_pad else
                          np.minimum(end, length) - np.maximum(start, 0))
        return np.multiply.outer(*counts).astype(dtype)

    def forward(self, input):
        x = check_input(input, 4, "AvgPool2d")
        kernel, stride, padding = self._geometry
        size = _output_size(x, kernel, stride, padding, (1, 1), self.ceil_mode, "AvgPool2d")
        xp = _padded(x, size, kernel, stride, padding, (1, 1), 0.0)
        self.divisor = self._divisor(x.shape, size, x.dtype)
        self.input_size = x.shape[2:]
        return window_view(xp, kernel, stride, (1, 1), size).sum(axis=(-2, -1)) / self.divisor

    def backward(self, grad_output):
        kernel, stride, padding = self._geometry
        windows = adjoint_windows(grad_output / self.divisor, self.input_size, kernel, stride, padding, (1, 1))
        return windows.sum(axis=(-2, -1))


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d(output_size): the mean over windows of uneven size that tile
    the input, window i along H being [⌊i·H/H_out⌋, ⌈(i+1)·H/H_out⌉) (likewise along W):

        y = (P_h @ x @ P_wᵀ) / (|window_h| ⊗ |window_w|)      P: 0/1 (H_out, H), (W_out, W)
        grad_x = P_hᵀ @ (grad_y / counts) @ P_w

    x: (N, C, H, W), y: (N, C, H_out, W_out). output_size: an int, or a pair whose None entries
    keep the input's size.
    """

    def __init__(self, output_size):
        self.output_size = output_size
        entries = (output_size,) * 2 if not isinstance(output_size, (tuple, list)) else tuple(output_size)
        if len(entries) != 2 or any(e is not None and (isinstance(e, bool) or not isinstance(e, (int, np.integer))
                                                       or e < 1) for e in entries):
            raise ValueError(f"output_size must be a positive int, None, or a pair of them, got {output_size!r}")
        self._entries = entries

    @staticmethod
    def _windows(length, out, dtype):
        """The 0/1 matrix (out, length) of the windows along one axis, and their sizes (out,)."""
        i = np.arange(out)
        start, end = (i * length) // out, -((-(i + 1) * length) // out)
        t = np.arange(length)
        member = (t >= start[:, None]) & (t < end[:, None])
        return member.astype(dtype), (end - start).astype(dtype)

    def forward(self, input):
        x = check_input(input, 4, "AdaptiveAvgPool2d")
        size = [length if e is None else e for length, e in zip(x.shape[2:], self._entries)]
        (self.p_h, count_h), (self.p_w, count_w) = (self._windows(length, o, x.dtype)
                                                    for length, o in zip(x.shape[2:], size))
        self.counts = np.multiply.outer(count_h, count_w)
        return (self.p_h @ x @ self.p_w.T) / self.counts

    def backward(self, grad_output):
        return self.p_h.T @ (grad_output / self.counts) @ self.p_w
