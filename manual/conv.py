"""Convolutions in numpy, as torch.nn's: Conv1d, Conv2d and ConvTranspose2d.

Each is im2col and matrix products, laid out for speed:

    columns   the windows of the padded input copied once (windows.im2col), per sample one
              contiguous (Cg·kh·kw, Ho·Wo) matrix per group; the buffer is reused between steps
    output    weight (G, Og, Cg·kh·kw) @ columns (N, G, Cg·kh·kw, Ho·Wo): one batched matmul,
              whose result is already (N, O, Ho, Wo), torch's layout, with no transpose
    grad_W    Σ_n columns[n] @ grad_output[n]ᵀ, the batched products summed over the samples
    grad_x    for stride 1, grad_output shifted along its rows once per kernel column, one
              product per sample, and one addition of whole planes per kernel row (_rows_back);
              otherwise the column gradients weightᵀ @ grad_output summed back onto the input,
              one strided-slice addition per kernel offset (windows.col2im)

Per-sample products rather than one (N·Ho·Wo, Cg·kh·kw) product: with few output channels (6
in LeNet's first layer) OpenBLAS is several times faster on the batch of (O, C·k·k) @ (C·k·k,
Ho·Wo) products, and their results need no transpose. ConvTranspose2d is the same pair the
other way round: its forward is a convolution's grad_input, its backward a convolution's
forward. The one-dimensional convolution runs as the two-dimensional one over (N, C, 1, L).
No Python loop over samples, channels or positions; a strided convolution's grad_input does
no work on the positions its stride skips.
"""
import numpy as np

from .module import Module
from .modules import Parameter
from .windows import check_input, check_positive, col2im, im2col, ntuple, pad_sides

PADDING_STRINGS = ("same", "valid")


def contract(columns, weight):
    """out[n, g·Og + o, h, w] = Σ_{c,i,j} weight[g, o, (c, i, j)] · columns[n, g·Cg + c, i, j, h, w].

    columns (N, C, kh, kw, Ho, Wo) from windows.im2col, weight (G, Og, Cg·kh·kw); returns the
    output (N, G·Og, Ho, Wo), contiguous."""
    n, c, kh, kw, ho, wo = columns.shape
    groups, og = weight.shape[:2]
    out = np.matmul(weight, columns.reshape(n, groups, -1, ho * wo))  # (N, G, Og, Ho·Wo)
    return out.reshape(n, groups * og, ho, wo)


def weight_gradient(grad_output, columns, groups):
    """Σ over samples and positions of grad_output ⊗ columns: (G, Og, Cg·kh·kw) from grad_output
    (N, O, Ho, Wo) and the columns (N, C, kh, kw, Ho, Wo) of the windows that made it."""
    n, o, ho, wo = grad_output.shape
    go = grad_output.reshape(n, groups, o // groups, ho * wo)
    cols = columns.reshape(n, groups, -1, ho * wo)
    # (N, G, Cg·kh·kw, Og) summed over N: with the long axis Og last, faster than its transpose
    return np.matmul(cols, go.transpose(0, 1, 3, 2)).sum(axis=0).transpose(0, 2, 1)


def transposed_conv(grad_output, weight, size, kernel, stride, pads, dilation):
    """The adjoint of a convolution of an input of `size` (H, W) padded by `pads` ((top, bottom),
    (left, right)): its grad_input from its grad_output (N, G·Og, Ho, Wo) and its weight as
    grouped() gives it, (G, Og, Cg·kh·kw). Returns (N, G·Cg, H, W), contiguous.

    Stride 1 (`_rows_back`): grad_output shifted along its rows, one copy per kernel column j,
    on rows as wide as the padded input; one product per sample takes the sum over channels and
    kernel columns, and the kernel rows i are kh shifted additions of whole planes. Otherwise the
    column gradients weightᵀ @ grad_output (N, G, Cg·kh·kw, Ho·Wo), summed back by col2im."""
    n, o, ho, wo = grad_output.shape
    groups, og = weight.shape[:2]
    padded = tuple(length + a + b for length, (a, b) in zip(size, pads))
    if stride == (1, 1):
        out = _rows_back(grad_output, weight.reshape((groups, og, -1) + tuple(kernel)), padded, dilation)
    else:
        cols = np.matmul(weight.transpose(0, 2, 1), grad_output.reshape(n, groups, og, -1))
        out = col2im(cols.reshape((n, -1) + tuple(kernel) + (ho, wo)), padded, stride, dilation)
    if any(a or b for a, b in pads):
        (top, _), (left, _) = pads
        out = np.ascontiguousarray(out[:, :, top:top + size[0], left:left + size[1]])
    return out


def _rows_back(grad_output, weight, padded, dilation):
    """transposed_conv for stride 1, weight (G, Og, Cg, kh, kw), onto the padded input (Hp, Wp):

        shifted[n, (o, j), h, w] = grad_output[n, o, h, w − j·dw]       (0 outside), w < Wp
        rows[n, (i, c), h, w]    = Σ_{o,j} weight[o, c, i, j] · shifted[n, (o, j), h, w]
        out[n, c, h + i·dh, w]  += rows[n, (i, c), h, w]                 for each kernel row i

    which is Σ_{o,i,j} weight[o, c, i, j] · grad_output[n, o, h − i·dh, w − j·dw], col2im's sum.
    On rows Wp long a row shift is a shift of the whole plane by i·dh·Wp: each addition runs
    along whole planes, and the products' operands are kw (not kh·kw) times grad_output's size."""
    n, o, ho, wo = grad_output.shape
    groups, og, cg, kh, kw = weight.shape
    (hp, wp), (dh, dw) = padded, dilation
    shifted = np.zeros((n, o, kw, ho, wp), grad_output.dtype)
    for j in range(kw):
        shifted[:, :, j, :, j * dw:j * dw + wo] = grad_output
    w = weight.transpose(0, 3, 2, 1, 4).reshape(groups, kh * cg, og * kw)  # (G, (i, c), (o, j))
    rows = np.matmul(w, shifted.reshape(n, groups, og * kw, ho * wp)).reshape(n, groups, kh, cg, ho * wp)
    out = np.zeros((n, groups, cg, hp * wp), grad_output.dtype)
    for i in range(kh):
        out[..., i * dh * wp:i * dh * wp + ho * wp] += rows[:, :, i]
    return out.reshape(n, groups * cg, hp, wp)


def grouped(weight, groups):
    """A convolution's weight (O, Cg, kh, kw) as contract() takes it, (G, Og, Cg·kh·kw)."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def _check_device(device):
    if device not in (None, "cpu"):
        raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")


def _check_groups(in_channels, out_channels, groups):
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % groups:
        raise ValueError("in_channels must be divisible by groups")
    if out_channels % groups:
        raise ValueError("out_channels must be divisible by groups")


def _check_padding_mode(padding_mode):
    if padding_mode != "zeros":
        raise ValueError(f"padding_mode {padding_mode!r} is not supported here: only 'zeros' "
                         "(torch also has 'reflect', 'replicate', 'circular')")


class _ConvNd(Module):
    """What Conv1d and Conv2d share: torch's arguments normalised to tuples, the parameters at
    zero (manual.init or load_state_dict sets them), and the computation in two dimensions."""

    _dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        _check_device(device)
        _check_groups(in_channels, out_channels, groups)
        _check_padding_mode(padding_mode)
        n = self._dims
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, n, "kernel_size")
        self.stride = ntuple(stride, n, "stride")
        self.dilation = ntuple(dilation, n, "dilation")
        for name in ("kernel_size", "stride", "dilation"):
            check_positive(getattr(self, name), name)
        if isinstance(padding, str):
            if padding not in PADDING_STRINGS:
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {set(PADDING_STRINGS)}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = ntuple(padding, n, "padding")
            if any(p < 0 for p in self.padding):
                raise ValueError(f"padding must be non-negative, got {self.padding}")
        self.padding_mode = padding_mode
        self.output_padding, self.transposed = (0,) * n, False
        dtype = np.float64 if dtype is None else dtype
        self.weight = Parameter(np.zeros((out_channels, in_channels // groups) + self.kernel_size, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None

    def _pads(self):
        """((top, bottom), (left, right)) in two dimensions. 'same' pads d·(k − 1) in all, the odd
        one on the right (bottom), as torch's F.pad before its convolution does; 'valid' none."""
        if self.padding == "valid":
            pads = [(0, 0)] * self._dims
        elif self.padding == "same":
            pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                    for k, d in zip(self.kernel_size, self.dilation)]
        else:
            pads = [(p, p) for p in self.padding]
        return ([(0, 0)] + pads)[-2:]

    def _as2d(self, values):
        """A tuple of the module's as the two-dimensional computation takes it."""
        return ((1,) + tuple(values))[-2:]

    def forward(self, input):
        """y = Σ weight ⋆ x + bias; keeps the columns and the input's shape for the backward."""
        x = check_input(input, self._dims + 2, type(self).__name__)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got shape {x.shape}")
        x = x[:, :, None] if self._dims == 1 else x
        self.columns = im2col(pad_sides(x, self._pads()), self._as2d(self.kernel_size), self._as2d(self.stride),
                              self._as2d(self.dilation), buffer=getattr(self, "columns", None))
        y = contract(self.columns, grouped(self.weight.data, self.groups))
        self.input_size = x.shape[2:]
        if self.bias is not None:
            y += self.bias.data[:, None, None]
        return y[:, :, 0] if self._dims == 1 else y

    def backward(self, grad_output, input_grad=True):
        """grad_weight from the kept columns, grad_bias = Σ_{n,h,w} grad_output, and grad_input:
        the transposed convolution of grad_output (see transposed_conv); None when `input_grad`
        is False (a network's input needs none, as Linear.backward's)."""
        g = grad_output[:, :, None] if self._dims == 1 else grad_output
        g = np.ascontiguousarray(g)
        shape = self.weight.data.shape
        self.weight.accumulate(weight_gradient(g, self.columns, self.groups).reshape(shape))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(g.sum(axis=(0, 2, 3)))
        if not input_grad:
            return None
        grad_input = transposed_conv(g, grouped(self.weight.data, self.groups), self.input_size,
                                     self._as2d(self.kernel_size), self._as2d(self.stride), self._pads(),
                                     self._as2d(self.dilation))
        return grad_input[:, :, 0] if self._dims == 1 else grad_input

    def named_parameters(self, prefix=""):
        yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias


class Conv1d(_ConvNd):
    """torch.nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, padding_mode='zeros', device=None, dtype=None):

        y[n, o, l] = b[o] + Σ_{c<Cg, i<k} W[o, c, i] · x_pad[n, g·Cg + c, l·s + i·d]     g = o // Og
        grad_W[o, c, i] = Σ_{n,l} grad_y[n, o, l] · x_pad[n, g·Cg + c, l·s + i·d]
        grad_b[o] = Σ_{n,l} grad_y[n, o, l]
        grad_x[n, g·Cg + c, t] = Σ_{o in g, i, l: l·s − p + i·d = t} W[o, c, i] · grad_y[n, o, l]

    x: (N, C_in, L)  W: (C_out, C_in/groups, k)  b: (C_out,)  y: (N, C_out, L_out),
    L_out = ⌊(L + 2p − d·(k − 1) − 1) / s⌋ + 1. padding: an int, a 1-tuple, 'valid' or 'same'
    (stride 1; an odd total padding puts the extra one on the right, as torch). padding_mode:
    'zeros' only. The parameters start at zero. Computed as Conv2d over (N, C, 1, L).
    """

    _dims = 1


class Conv2d(_ConvNd):
    """torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, padding_mode='zeros', device=None, dtype=None):

        y[n, o, h, w] = b[o] + Σ_{c<Cg, i, j} W[o, c, i, j] · x_pad[n, g·Cg + c, h·sh + i·dh, w·sw + j·dw]
        grad_W[o, c, i, j] = Σ_{n,h,w} grad_y[n, o, h, w] · x_pad[n, g·Cg + c, h·sh + i·dh, w·sw + j·dw]
        grad_b[o] = Σ_{n,h,w} grad_y[n, o, h, w]
        grad_x = the transposed convolution of grad_y with W (what ConvTranspose2d computes)

    with g = o // (C_out/groups), Cg = C_in/groups. x: (N, C_in, H, W), W: (C_out, Cg, kh, kw),
    b: (C_out,), y: (N, C_out, H_out, W_out), H_out = ⌊(H + 2ph − dh·(kh − 1) − 1) / sh⌋ + 1.
    padding: an int, a pair, 'valid' or 'same' (stride 1 only, the odd one on the bottom/right
    as torch). padding_mode: 'zeros' only (others: ValueError). The parameters start at zero:
    manual.init or load_state_dict sets them.
    """


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode='zeros', device=None, dtype=None):
    the adjoint of Conv2d(out_channels, in_channels, ...) with the same weight, plus a bias.

        y[n, g·Og + o, h, w] = b[.] + Σ_{c in g, i, j, h', w': h'·sh − ph + i·dh = h, w'·sw − pw + j·dw = w}
                               W[c, o, i, j] · x[n, c, h', w']
        grad_x = Conv2d's forward of grad_y with W (padding p, stride s, dilation d, groups)
        grad_W[c, o, i, j] = Σ_{n,h',w'} x[n, c, h', w'] · grad_y_pad[n, g·Og + o, h'·sh + i·dh, w'·sw + j·dw]
        grad_b = Σ_{n,h,w} grad_y

    x: (N, C_in, H, W), W: (C_in, C_out/groups, kh, kw), b: (C_out,), y: (N, C_out, H_out, W_out),
    H_out = (H − 1)·sh − 2ph + dh·(kh − 1) + output_padding_h + 1. forward(input, output_size)
    takes torch's output_size too (it picks output_padding). padding_mode: 'zeros' only.
    The parameters start at zero.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        _check_device(device)
        _check_groups(in_channels, out_channels, groups)
        _check_padding_mode(padding_mode)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        for name, value in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
                            ("output_padding", output_padding), ("dilation", dilation)):
            setattr(self, name, ntuple(value, 2, name))
        for name in ("kernel_size", "stride", "dilation"):
            check_positive(getattr(self, name), name)
        if any(p < 0 for p in self.padding + self.output_padding):
            raise ValueError(f"padding and output_padding must be non-negative, got {self.padding}, "
                             f"{self.output_padding}")
        self._check_output_padding(self.output_padding)
        self.padding_mode, self.transposed = padding_mode, True
        dtype = np.float64 if dtype is None else dtype
        self.weight = Parameter(np.zeros((in_channels, out_channels // groups) + self.kernel_size, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None

    def _check_output_padding(self, output_padding):
        if any(op >= s and op >= d for op, s, d in zip(output_padding, self.stride, self.dilation)):
            raise ValueError(f"output_padding must be smaller than either stride or dilation, got "
                             f"output_padding {tuple(output_padding)}, stride {self.stride}, dilation {self.dilation}")

    def _output_padding(self, input_size, output_size):
        """torch's _output_padding: the output_padding that gives `output_size` (H_out, W_out)."""
        if output_size is None:
            return self.output_padding
        output_size = tuple(output_size)[-2:]
        smallest = [(h - 1) * s - 2 * p + d * (k - 1) + 1 for h, s, p, d, k in
                    zip(input_size, self.stride, self.padding, self.dilation, self.kernel_size)]
        if len(output_size) != 2 or any(not lo <= size <= lo + s - 1
                                        for size, lo, s in zip(output_size, smallest, self.stride)):
            raise ValueError(f"output_size {output_size}: valid sizes range from {tuple(smallest)} to "
                             f"{tuple(lo + s - 1 for lo, s in zip(smallest, self.stride))}")
        return tuple(size - lo for size, lo in zip(output_size, smallest))

    def forward(self, input, output_size=None):
        """y = Conv2dᵀ x + bias: x's column gradients under the weight, summed back (transposed_conv)."""
        x = check_input(input, 4, "ConvTranspose2d")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"ConvTranspose2d expects {self.in_channels} input channels, got shape {x.shape}")
        output_padding = self._output_padding(x.shape[2:], output_size)
        size = [(h - 1) * s - 2 * p + d * (k - 1) + op + 1 for h, s, p, d, k, op in
                zip(x.shape[2:], self.stride, self.padding, self.dilation, self.kernel_size, output_padding)]
        if min(size) < 1:
            raise ValueError(f"ConvTranspose2d's output would be {tuple(size)} for an input of shape {x.shape}")
        x = np.ascontiguousarray(x)
        y = transposed_conv(x, grouped(self.weight.data, self.groups), size, self.kernel_size, self.stride,
                            [(p, p) for p in self.padding], self.dilation)
        self.x = x
        if self.bias is not None:
            y += self.bias.data[:, None, None]
        return y

    def backward(self, grad_output):
        """grad_x: Conv2d's forward of grad_output with the same weight; grad_W from its columns."""
        pads = [(p, p) for p in self.padding]
        self.columns = im2col(pad_sides(grad_output, pads), self.kernel_size, self.stride, self.dilation,
                              out_size=self.x.shape[2:], buffer=getattr(self, "columns", None))
        grad_input = contract(self.columns, grouped(self.weight.data, self.groups))
        self.weight.accumulate(weight_gradient(self.x, self.columns, self.groups).reshape(self.weight.data.shape))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(grad_output.sum(axis=(0, 2, 3)))
        return grad_input

    def named_parameters(self, prefix=""):
        yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias
