"""Losses in numpy, as torch.nn's loss modules: `forward(input, target)` returns the loss as a
0-d array and caches the residual; `backward()` returns dE/dinput, shape (N, C).
"""
import numpy as np


class HalfSSELoss:
    """The seed's error: E = Σ ½(target − out)², summed over outputs and over the batch.

        grad_input = out − target          (N, C)
    """

    def forward(self, input, target):
        self.diff = input - target  # (N, C)
        return 0.5 * np.sum(self.diff * self.diff)

    def backward(self):
        return self.diff


class MSELoss:
    """torch.nn.MSELoss(reduction="mean"): E = mean((out − target)²) over all N·C elements.

        grad_input = 2 (out − target) / (N·C)     (N, C)
    """

    def forward(self, input, target):
        self.diff = input - target  # (N, C)
        return np.mean(self.diff * self.diff)

    def backward(self):
        return (2.0 / self.diff.size) * self.diff


LOSSES = {"half-sse": HalfSSELoss, "mse": MSELoss}
