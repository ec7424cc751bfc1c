"""Modules that pick from a sequence, for a layer list after a recurrent module (torch has no class:
user code writes `out[:, -1]`).

LastStep: (N, T, F) -> (N, F), the last time step of a batch-first sequence, output[:, −1].
For a bidirectional module's output (N, T, 2H) that is the forward direction's last state and the
reverse direction's state after its *first* step (the one that has read only x_{T−1}), exactly
what `out[:, -1]` is in user code; the reverse direction's final state is h_n's, at t = 0.
"""
import numpy as np

from .module import Module


class LastStep(Module):
    """y = x[:, −1] for x (N, T, F) (batch first, as the layer list's data are).

    backward: grad_x is zero everywhere but at t = T − 1, where it is grad_y."""

    def forward(self, input):
        x = np.asarray(input)
        if x.ndim != 3:
            raise ValueError(f"LastStep expects a batch-first sequence (N, T, F), got shape {x.shape}")
        self.input_shape, self.dtype = x.shape, x.dtype
        return np.ascontiguousarray(x[:, -1])

    def backward(self, grad_output):
        grad = np.zeros(self.input_shape, np.result_type(self.dtype, np.asarray(grad_output).dtype))
        grad[:, -1] = grad_output
        return grad
