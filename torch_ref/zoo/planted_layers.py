"""The tests' planted bugs in the modules of a layer list (torch_ref/description/layers.py), each
on a shipped description and caught at the iteration, stage and module where its wrong value
first appears: a forward formula at `forward layers.i`, a backward one at the delta of the
module before it, a running statistic at `buffer`. Registered with the others (mistakes.REGISTRY)
and built the same way (faulty.py); each is also a plug-in factory."""
import numpy as np

import manual.batchnorm
import manual.container
import manual.dropout
import manual.flatten
import manual.normalization
from .faulty import Mistake, correct
from .planted import planted
from ..description import spec
from ..description.files import bundled_path

F64 = (("float64", "free"),)
BOTH = (("float64", "free"), ("float32", "resync"))


def shipped(name, steps=3):
    """() -> the bundled description `name`, cut to `steps` iterations."""
    def described():
        desc = spec.load(bundled_path(name))
        desc["run"] = {**desc["run"], "steps": steps}
        return desc
    described.__doc__ = f"torch_ref/specs/{name}.toml, {steps} iterations"
    return described


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


def residual_skip_dropped(self, grad_output):
    return self.body.backward(grad_output)


def dropout_backward_unscaled(self, grad_output):
    return grad_output if self.scale is None else grad_output * (self.scale != 0)


def flatten_channels_last(self, x):
    self.input_shape = x.shape
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(len(x), -1)


def layer_norm_last_axis_only(self, x):
    self.axes = (x.ndim - 1,)
    self.xhat, self.rstd, _, _ = manual.normalization.standardize(x, self.axes, self.eps)
    return self.xhat * self.weight.data + self.bias.data


B = manual.batchnorm.BatchNorm
LAYER_PLANTED = [
    planted("BatchNorm normalises with the unbiased variance (torch normalises with the biased one).",
            {(B, "forward"): batchnorm_unbiased_variance}, shipped("batchnorm_mlp"), "forward", "layers.1",
            checks=BOTH),
    planted("The running variance updated with the biased batch variance (torch keeps the unbiased one).",
            {(B, "update_running_stats"): running_var_biased}, shipped("batchnorm_mlp"), "buffer",
            "layers.1.running_var", checks=BOTH),
    planted("A residual block whose backward drops the skip path: grad_x = body's only.",
            {(manual.container.Residual, "backward"): residual_skip_dropped}, shipped("residual"), "delta",
            "layers.0", checks=BOTH),
    planted("Dropout's backward keeps the mask but not its 1 / (1 − p) scaling.",
            {(manual.dropout.Dropout, "backward"): dropout_backward_unscaled}, shipped("dropout"), "delta",
            "layers.4", checks=BOTH),  # (the last dropout, layers.5, acts first in backward)
    planted("Flatten in (H, W, C) order, where torch flattens (C, H, W).",
            {(manual.flatten.Flatten, "forward"): flatten_channels_last}, shipped("lenet"), "forward", "layers.5",
            checks=BOTH),
    planted("LayerNorm over the last axis only, where normalized_shape names two.",
            {(manual.normalization.LayerNorm, "forward"): layer_norm_last_axis_only}, shipped("residual"),
            "forward", "layers.2", checks=BOTH),
]
assert all(isinstance(m, Mistake) for m in LAYER_PLANTED)
