"""The manual side of the lockstep, behind the interface any implementation can provide:

    load_state_dict(state)  state: {"layers.{k}.weight": (out, in), "layers.{k}.bias": (out,) or ()}
    train_step(x, y) -> {"output": (N, C), "loss": float,          forward pass, before the update
                         "deltas": {"layers.{k}": (N, out)},       dE/dnet_k, before the update
                         "grads": {name: array},                   before the update
                         "state_dict": {name: array}}              after the update
"""
import numpy as np

from .losses import LOSSES
from .modules import MLP
from .optim import OPTIMIZERS


class Trainer:
    """One MLP, its loss and its optimizer, built from a parsed network description (a dict)."""

    def __init__(self, desc):
        net, opt = desc["network"], dict(desc["optimizer"])
        self.dtype = np.dtype(desc["run"]["dtype"])
        self.model = MLP(net["sizes"], net["activation"], net["bias"], self.dtype)
        self.loss_fn = LOSSES[net["loss"]]()
        self.optimizer = OPTIMIZERS[opt.pop("name")](self.model.parameters(), **opt)
        self.params = dict(self.model.named_parameters())

    def load_state_dict(self, state):
        for name, p in self.params.items():
            p.data[...] = state[name]

    def state_dict(self):
        return {name: p.data.copy() for name, p in self.params.items()}

    def train_step(self, x, y):
        self.optimizer.zero_grad()
        output = self.model.forward(x)
        loss = self.loss_fn.forward(output, y)
        self.model.backward(self.loss_fn.backward())
        result = {
            "output": output,
            "loss": float(loss),
            "deltas": {f"layers.{k}": d for k, d in enumerate(self.model.deltas)},
            "grads": {n: p.grad.copy() for n, p in self.params.items() if p.requires_grad},
        }
        self.optimizer.step()
        result["state_dict"] = self.state_dict()
        return result


def build(desc):
    """The plug-in factory for the manual engine: `manual.trainer:build`."""
    return Trainer(desc)
