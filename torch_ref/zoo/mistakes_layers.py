"""The zoo's classic mistakes in the modules of a layer list (convolution, pooling, batch and layer
normalisation, dropout, residual blocks, Flatten), registered with the MLP's in
torch_ref/zoo/mistakes.py (`ZOO`, `REGISTRY`) and built the same way (torch_ref/zoo/faulty.py).

Each runs on a small description (a shipped one cut to a few iterations, or faulty.conv_stack) chosen
so that it is caught at the first stage and module where it acts: a forward formula at
`forward layers.i`, a backward one at the first delta it corrupts (the module before it, as the
backward runs last module first), a weight gradient at `grad`, a running statistic at `buffer`.
Each is a plug-in factory by its name here, e.g.
`backprop-check run lenet --impl torch_ref.zoo.mistakes_layers:MaxPoolGradToWholeWindow`.

The faulty code reads only torch's attribute names of a module (kernel_size, stride, padding,
dilation, groups, weight, momentum, p, ...) and the inputs it remembers itself; a correct
computation it keeps is the engine's own method (faulty.correct).
"""
import numpy as np

import manual.batchnorm
import manual.container
import manual.conv
import manual.dropout
import manual.flatten
import manual.normalization
import manual.pooling
from .faulty import Mistake, conv_stack, correct, shipped

# the runs that must catch each (tests/test_mistakes.py): float64, and float32 judged each step (resync);
# scripts/sweep.py runs each in float32 resync and shadow too
CHECKS = (("float64", "free"), ("float32", "resync"))
Conv2d, BatchNorm = manual.conv.Conv2d, manual.batchnorm.BatchNorm


def in_zoo(id, what, replaces, description, stage, tensor, module, **where):
    """A zoo entry that applies where the network has a module of type `module`."""
    return Mistake(id, what, replaces, description, stage, tensor, needs={"module": (module,)}, zoo=True,
                   checks=CHECKS, **where)


# --- windows, computed here (the engine's own are what the mistakes are checked against) ----------

def pair(value):
    """torch's _pair: an int or a pair as a pair."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv_padding(conv):
    """(top, left) padding of a Conv2d: its ints, 'valid' (none) or 'same' (d·(k − 1) // 2)."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(pair(conv.kernel_size), pair(conv.dilation)))
    return pair(conv.padding)


def scatter_windows(part, size, out_size, kernel, stride, dilation, top_left, crop=None):
    """Σ over the window offsets (i, j) of part(i, j) (N, C, Ho, Wo), each output position's value
    sent to the input element at offset (i, j) of its window, (h·sh + i·dh, w·sw + j·dw) in the
    padded input: the adjoint of a windowed sum. Returns the input's (N, C, H, W) for `size`
    (H, W), cropped from the padded input at `crop` (default: `top_left`, the padding)."""
    ho, wo = out_size
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    grad = None
    for i in range(kh):
        for j in range(kw):
            g = part(i, j)
            if grad is None:
                extent = [max(top + length, (o - 1) * s + (k - 1) * d + 1) for top, length, o, s, k, d in
                          zip(top_left, size, out_size, stride, kernel, dilation)]
                grad = np.zeros(g.shape[:2] + tuple(extent), g.dtype)
            grad[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw] += g
    top, left = top_left if crop is None else crop
    return grad[:, :, top:top + size[0], left:left + size[1]]


def conv_input_gradient(conv, grad_output, stride=None, dilation=None, crop=None):
    """grad_x of a Conv2d (any groups) offset by offset, with its own stride and dilation unless given."""
    n, o, ho, wo = grad_output.shape
    w = conv.weight.data
    groups = conv.groups
    g = grad_output.reshape(n, groups, o // groups, ho, wo)
    w = w.reshape((groups, o // groups) + w.shape[1:])

    def part(i, j):
        return np.einsum("ngohw,goc->ngchw", g, w[..., i, j]).reshape(n, -1, ho, wo)
    return scatter_windows(part, conv.seen[2:], (ho, wo), pair(conv.kernel_size), stride or pair(conv.stride),
                           dilation or pair(conv.dilation), conv_padding(conv), crop)


def remember_input(self, input):
    """forward, remembering the input's shape (and the input) for the faulty backward."""
    self.seen, self.seen_input = np.shape(input), input
    return correct(self, "forward")(input)


# --- the faulty code ------------------------------------------------------------------------------

def kernel_flipped(self, input):
    w = self.weight.data
    self.weight.data = np.ascontiguousarray(w[:, :, ::-1, ::-1])  # a true convolution
    try:
        return correct(self, "forward")(input)
    finally:
        self.weight.data = w


def weight_grad_last_position(self, grad_output):
    before = self.weight.grad  # (held here: the engine's backward then adds into a new array)
    grad_input = correct(self, "backward")(grad_output)
    x = self.seen_input
    (top, left), (sh, sw), (dh, dw) = conv_padding(self), pair(self.stride), pair(self.dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, top), (left, left)))
    n, o, ho, wo = grad_output.shape
    kh, kw = pair(self.kernel_size)
    # the window of the last output position only: dW = ... inside the loop over positions, not dW += ...
    window = xp[:, :, (ho - 1) * sh:(ho - 1) * sh + (kh - 1) * dh + 1:dh, (wo - 1) * sw:(wo - 1) * sw + (kw - 1) * dw + 1:dw]
    g, groups = grad_output[:, :, -1, -1], self.groups
    window = window.reshape((n, groups, -1) + window.shape[2:])
    last = np.einsum("ngo,ngcij->gocij", g.reshape(n, groups, -1), window).reshape(self.weight.data.shape)
    self.weight.grad = last if before is None else before + last
    return grad_input


def stride_ignored_in_backward(self, grad_output):
    correct(self, "backward")(grad_output)  # the parameters' gradients, as the engine's
    return conv_input_gradient(self, grad_output, stride=(1, 1))  # window h at h, not h·stride


def dilation_ignored_in_backward(self, grad_output):
    correct(self, "backward")(grad_output)
    return conv_input_gradient(self, grad_output, dilation=(1, 1))  # offset i at i, not i·dilation


def padding_border_kept(self, grad_output):
    correct(self, "backward")(grad_output)
    return conv_input_gradient(self, grad_output, crop=(0, 0))  # dx_pad[:H, :W], not dx_pad[p:p+H, p:p+W]


def max_pool_grad_to_window(self, grad_output):
    kernel = pair(self.kernel_size)
    stride = pair(self.stride if self.stride is not None else self.kernel_size)
    return scatter_windows(lambda i, j: grad_output, self.seen[2:], grad_output.shape[2:], kernel, stride,
                           pair(self.dilation), pair(self.padding))


def avg_pool_grad_undivided(self, grad_output):
    kernel = pair(self.kernel_size)
    stride = pair(self.stride if self.stride is not None else self.kernel_size)
    return scatter_windows(lambda i, j: grad_output, self.seen[2:], grad_output.shape[2:], kernel, stride,
                           (1, 1), pair(self.padding))


def batchnorm_backward_constant_stats(self, grad_output):
    correct(self, "backward")(grad_output)  # the affine gradients, as the engine's
    x = self.seen_input
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g = grad_output if self.weight is None else grad_output * self.weight.data.reshape(shape)
    return g / np.sqrt(x.var(axis=axes, keepdims=True) + self.eps)  # mean and variance taken as constants


def momentum_inverted(self, mean, unbiased):
    if self.momentum is None:
        return correct(self, "update_running_stats")(mean, unbiased)
    momentum, self.momentum = self.momentum, 1.0 - self.momentum  # Keras's: running·m + batch·(1 − m)
    try:
        return correct(self, "update_running_stats")(mean, unbiased)
    finally:
        self.momentum = momentum


def batchnorm_unbiased_variance(self, x):
    y = correct(self, "forward")(x)
    if not self.batch_stats:
        return y
    n = x.size // x.shape[1]
    self.xhat = self.xhat * np.sqrt((n - 1) / n)  # normalised by the unbiased variance
    y = self.xhat * self.channel(self.weight.data, x.ndim)
    return y + self.channel(self.bias.data, x.ndim)


def running_var_biased(self, mean, unbiased):
    n = self.xhat.size // self.xhat.shape[1]
    return correct(self, "update_running_stats")(mean, unbiased * (n - 1) / n)


def dropout_backward_unscaled(self, grad_output):
    return grad_output if self.scale is None else grad_output * (self.scale != 0)


def dropout_backward_unmasked(self, grad_output):
    if self.last_mask is None:  # eval, p = 0 or p = 1: nothing was masked
        return correct(self, "backward")(grad_output)
    return grad_output / (1.0 - self.p)


def layer_norm_last_axis_only(self, x):
    self.axes = (x.ndim - 1,)
    self.xhat, self.rstd, _, _ = manual.normalization.standardize(x, self.axes, self.eps)
    return self.xhat * self.weight.data + self.bias.data


def flatten_channels_last(self, x):
    self.input_shape = x.shape
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(len(x), -1)


def residual_skip_dropped(self, grad_output):
    return self.body.backward(grad_output)


# --- the zoo's layer-list entries, in its order ---------------------------------------------------

ConvKernelFlipped = in_zoo(
    "conv-kernel-flipped", "Convolution instead of cross-correlation: the kernel flipped (W[:, :, ::-1, ::-1]), "
    "where torch's Conv2d slides it unflipped.", {(Conv2d, "forward"): kernel_flipped}, shipped("lenet", 2),
    "forward", "layers.0", "Conv2d")
ConvWeightGradNotSummed = in_zoo(
    "conv-weight-grad-not-summed", "The convolution's weight gradient not summed over the output positions: "
    "dW = … where the loop over positions must add, dW += …, so only the last position's is left.",
    {(Conv2d, "forward"): remember_input, (Conv2d, "backward"): weight_grad_last_position}, conv_stack,
    "grad", "layers.2.weight", "Conv2d")  # (gradients are compared as backward makes them: layers.2 first)
ConvStrideIgnoredInBackward = in_zoo(
    "conv-stride-ignored-in-backward", "The convolution's input gradient ignores the stride: output position h "
    "sends its gradient to the window at h, not at h·stride.",
    {(Conv2d, "forward"): remember_input, (Conv2d, "backward"): stride_ignored_in_backward}, conv_stack,
    "delta", "layers.1", "Conv2d")
ConvDilationIgnoredInBackward = in_zoo(
    "conv-dilation-ignored-in-backward", "The convolution's input gradient ignores the dilation: kernel offset i "
    "sends its gradient to row i of the window, not i·dilation.",
    {(Conv2d, "forward"): remember_input, (Conv2d, "backward"): dilation_ignored_in_backward}, conv_stack,
    "delta", "layers.1", "Conv2d")
ConvPaddingBorderKept = in_zoo(
    "conv-padding-border-kept", "The gradient of the padded input cropped as dx_pad[:H, :W]: the padding's "
    "top and left border kept, the input's last rows and columns dropped (dx_pad[p:p+H, p:p+W]).",
    {(Conv2d, "forward"): remember_input, (Conv2d, "backward"): padding_border_kept}, conv_stack,
    "delta", "layers.1", "Conv2d")
MaxPoolGradToWholeWindow = in_zoo(
    "max-pool-grad-to-whole-window", "Max-pooling's gradient sent to every element of the window, not to its "
    "maximum only.", {(manual.pooling.MaxPool2d, "forward"): remember_input,
                      (manual.pooling.MaxPool2d, "backward"): max_pool_grad_to_window}, shipped("lenet", 2),
    "delta", "layers.1", "MaxPool2d")
AvgPoolGradNotDivided = in_zoo(
    "avg-pool-grad-not-divided", "Average-pooling's gradient sent back to the window without dividing by the "
    "window's size.", {(manual.pooling.AvgPool2d, "forward"): remember_input,
                       (manual.pooling.AvgPool2d, "backward"): avg_pool_grad_undivided}, conv_stack,
    "delta", "layers.3", "AvgPool2d")
BatchNormBackwardConstantStats = in_zoo(
    "batchnorm-backward-without-stat-terms", "Batch norm's backward without the terms through the batch mean "
    "and variance: grad_x = grad_y·γ/√(var + ε), as if they were constants.",
    {(BatchNorm, "forward"): remember_input, (BatchNorm, "backward"): batchnorm_backward_constant_stats},
    shipped("batchnorm_mlp", 2), "delta", "layers.3", "BatchNorm1d")  # (layers.4, the last, acts first)
BatchNormUnbiasedVariance = in_zoo(
    "batchnorm-unbiased-variance", "Batch norm normalising with the unbiased variance (÷ (n − 1)), where torch "
    "normalises with the biased one (÷ n).", {(BatchNorm, "forward"): batchnorm_unbiased_variance},
    shipped("batchnorm_mlp", 2), "forward", "layers.1", "BatchNorm1d")
BatchNormRunningVarBiased = in_zoo(
    "batchnorm-running-var-biased", "The running variance updated with the biased batch variance, where torch "
    "keeps the unbiased one.", {(BatchNorm, "update_running_stats"): running_var_biased},
    shipped("batchnorm_mlp", 2), "buffer", "layers.1.running_var", "BatchNorm1d")
BatchNormMomentumInverted = in_zoo(
    "batchnorm-momentum-inverted", "The momentum convention inverted: running ← m·running + (1 − m)·batch (Keras's), "
    "where torch's m weighs the new batch.", {(BatchNorm, "update_running_stats"): momentum_inverted},
    shipped("batchnorm_mlp", 2), "buffer", "layers.1.running_mean", "BatchNorm1d")
DropoutBackwardUnscaled = in_zoo(
    "dropout-backward-unscaled", "Dropout's backward keeps the mask but not its 1 / (1 − p) scaling.",
    {(manual.dropout.Dropout, "backward"): dropout_backward_unscaled}, shipped("dropout", 2), "delta",
    "layers.4", "Dropout")  # (the last dropout, layers.5, acts first in backward)
DropoutBackwardUnmasked = in_zoo(
    "dropout-backward-unmasked", "Dropout's backward scales by 1 / (1 − p) but forgets the mask: the dropped "
    "elements get a gradient.", {(manual.dropout.Dropout, "backward"): dropout_backward_unmasked},
    shipped("dropout", 2), "delta", "layers.4", "Dropout")
LayerNormLastAxisOnly = in_zoo(
    "layer-norm-last-axis-only", "Layer norm over the last axis only, where normalized_shape names two (C, L).",
    {(manual.normalization.LayerNorm, "forward"): layer_norm_last_axis_only}, shipped("residual", 2),
    "forward", "layers.2", "LayerNorm")
ResidualSkipDropped = in_zoo(
    "residual-skip-dropped", "A residual block whose backward drops the skip path: grad_x = body's only, "
    "not grad_y + body's.", {(manual.container.Residual, "backward"): residual_skip_dropped},
    shipped("residual", 2), "delta", "layers.0", "Residual")
FlattenChannelsLast = in_zoo(
    "flatten-channels-last", "Flatten in (H, W, C) order, where torch flattens (C, H, W).",
    {(manual.flatten.Flatten, "forward"): flatten_channels_last}, shipped("lenet", 2), "forward", "layers.5",
    "Flatten")

LAYER_ZOO = [m for m in globals().values() if isinstance(m, Mistake)]  # in the order above
