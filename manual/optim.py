"""Optimizers in numpy with torch.optim's argument names and update rules.

An optimizer holds `Parameter`s and updates `p.data` in place from `p.grad`.
"""


class SGD:
    """torch.optim.SGD without momentum:  p ← p − lr · grad."""

    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr

    def step(self):
        for p in self.params:
            p.data -= self.lr * p.grad

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def state_dict(self):
        """Per-parameter state, keyed as `{index}.{buffer}`: plain SGD keeps none."""
        return {}


OPTIMIZERS = {"sgd": SGD}
