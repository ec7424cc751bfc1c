"""Penalties added to the loss, as real code writes them inside its loss (the description's
[penalty] section), over chosen parameters θ (by default the weights):

    E ← E + (λ₂/2) · Σ θ²  +  λ₁ · Σ |θ|
    dE/dθ ← dE/dθ + λ₂ θ  +  λ₁ sign(θ)          sign(0) = 0, as torch's

An L2 penalty is not torch.optim's weight_decay in general. The reported loss always differs (the
penalty is in it). The parameters move alike with SGD and Adam, whose weight_decay adds λθ to the
gradient the optimizer sees, as the penalty's gradient is; not with AdamW, whose decoupled decay
θ ← θ(1 − γλ) never passes through the moments; nor under gradient clipping, which clips the
penalty's gradient but not the decay.
"""
import numpy as np


class Penalty:
    """(λ₂/2)·Σθ² + λ₁·Σ|θ| over `params` ({name: Parameter}); value() is added to the loss after
    the forward pass, backward() adds its gradient to each parameter's after the model's."""

    def __init__(self, params, l1=0.0, l2=0.0):
        self.params, self.l1, self.l2 = dict(params), l1, l2

    def value(self):
        total = 0.0
        for p in self.params.values():
            if self.l2:
                total = total + 0.5 * self.l2 * np.vdot(p.data, p.data)
            if self.l1:
                total = total + self.l1 * np.abs(p.data).sum()
        return total

    def backward(self):
        for p in self.params.values():
            g = np.zeros_like(p.data)
            if self.l2:
                g += self.l2 * p.data
            if self.l1:
                g += self.l1 * np.sign(p.data)
            p.grad = g if p.grad is None else p.grad + g  # a new array: a gradient handed out keeps its values


def make_penalty(spec, params):
    """The description's penalty section ({"l1", "l2", "params": names}) over the model's
    parameters ({name: Parameter}), or None without one."""
    if not spec:
        return None
    return Penalty({name: params[name] for name in spec["params"]}, spec["l1"], spec["l2"])
