"""Batch normalisation in numpy, as torch.nn.BatchNorm1d and torch.nn.BatchNorm2d (torch keeps them
in torch/nn/modules/batchnorm.py): per channel, over the batch and the spatial positions.

    batch statistics (training, or track_running_stats=False):
        mean, var = the mean and the BIASED variance over (N, *) of each channel   (n = N · Π* values)
        y = (x − mean) / √(var + eps) · weight + bias
        running_mean ← (1 − f) · running_mean + f · mean
        running_var  ← (1 − f) · running_var  + f · var · n / (n − 1)       the UNBIASED variance
        num_batches_tracked ← num_batches_tracked + 1
        f = momentum, or 1 / num_batches_tracked when momentum is None (the cumulative average)
    running statistics (eval with track_running_stats=True):
        y = (x − running_mean) / √(running_var + eps) · weight + bias        nothing updated

The running statistics are updated only in training with track_running_stats=True, as torch's.
"""
import numpy as np

from .module import Module
from .modules import Parameter
from .normalization import accumulate_affine, resolve_dtype, standardize, standardize_backward


class BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share (torch's _BatchNorm): the constructor, the buffers and
    the forward and backward over the axes (0, 2, 3, ...) of an (N, C, *) input.

        x̂ = (x − mean) · rstd,   rstd = 1 / √(var + eps),   y = x̂ · weight[c] + bias[c]
        grad_weight = Σ_{N,*} grad_y · x̂,   grad_bias = Σ_{N,*} grad_y
        batch statistics (the classic closed form, through the batch mean and variance):
            grad_x = rstd · (g − mean(g) − x̂ · mean(g · x̂)),   g = grad_y · weight[c], means over (N, *)
        running statistics (constants): grad_x = grad_y · weight[c] · rstd

    weight starts at 1 and bias at 0 (affine=False: both None); running_mean at 0, running_var at 1,
    num_batches_tracked at 0 (a 0-d int64 array), as torch's; track_running_stats=False: no buffers.
    """

    def __init__(self, num_features, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        dtype = resolve_dtype(device, dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(num_features, dtype)
            self.running_var = np.ones(num_features, dtype)
            self.num_batches_tracked = np.array(0, np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def check_input_dim(self, x):
        raise NotImplementedError

    def forward(self, x):
        self.check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: num_features is {self.num_features}, the input has "
                             f"{x.shape[1]} channels (shape {list(x.shape)})")
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.batch_stats = self.training or self.running_mean is None
        if self.batch_stats:
            n = x.size // x.shape[1]
            if n == 1:  # torch's _verify_batch_size
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                                 f"training, got input size {list(x.shape)}")
            self.xhat, self.rstd, mean, var = standardize(x, self.axes, self.eps)
            if self.training and self.track_running_stats:
                self.update_running_stats(mean.reshape(-1), var.reshape(-1) * (n / (n - 1)))
        else:
            self.rstd = 1.0 / np.sqrt(self.channel(self.running_var, x.ndim) + self.eps)
            self.xhat = (x - self.channel(self.running_mean, x.ndim)) * self.rstd
        y = self.xhat * self.channel(self.weight.data, x.ndim) if self.weight is not None else self.xhat.copy()
        if self.bias is not None:
            y += self.channel(self.bias.data, x.ndim)
        return y

    def update_running_stats(self, mean, unbiased):
        """num_batches_tracked += 1, then the running averages of the batch mean and of the unbiased
        batch variance (both (C,)), with factor momentum (or 1 / num_batches_tracked when momentum is
        None). In place, as torch updates its buffers."""
        self.num_batches_tracked += 1
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean *= 1.0 - f
        self.running_mean += f * mean
        self.running_var *= 1.0 - f
        self.running_var += f * unbiased

    @staticmethod
    def channel(values, ndim):
        """A per-channel (C,) array shaped (1, C, 1, ..., 1) to broadcast against an (N, C, *) input."""
        return values.reshape((1, -1) + (1,) * (ndim - 2))

    def backward(self, grad_output):
        accumulate_affine(self.weight, self.bias, grad_output, self.xhat, self.axes)
        g = grad_output * self.channel(self.weight.data, grad_output.ndim) if self.weight is not None else grad_output
        if self.batch_stats:
            return standardize_backward(g, self.xhat, self.rstd, self.axes)
        return g * self.rstd

    def named_parameters(self, prefix=""):
        if self.weight is not None:
            yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias

    def named_buffers(self, prefix=""):
        if self.track_running_stats:
            yield f"{prefix}running_mean", self.running_mean
            yield f"{prefix}running_var", self.running_var
            yield f"{prefix}num_batches_tracked", self.num_batches_tracked


class BatchNorm1d(BatchNorm):
    """torch.nn.BatchNorm1d(num_features, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None): x of shape (N, C) or (N, C, L), statistics per channel over N (and L).
    The formulas are BatchNorm's (above) and the module docstring's."""

    def check_input_dim(self, x):
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D or 3D input (got {x.ndim}D input)")


class BatchNorm2d(BatchNorm):
    """torch.nn.BatchNorm2d(num_features, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None): x of shape (N, C, H, W), statistics per channel over N, H and W.
    The formulas are BatchNorm's (above) and the module docstring's."""

    def check_input_dim(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected 4D input (got {x.ndim}D input)")
