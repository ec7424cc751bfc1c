"""The torch twin: the same MLP as a torch.nn.Module, trained by autograd and torch.optim.

It is built from the same parsed description as the manual side and takes its initial
parameters from it, so both start bit-for-bit equal. `Twin.train_step` returns the same dict
as the manual interface (numpy arrays), with each layer's delta dE/dnet taken by `retain_grad`.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "identity": lambda z: z}


def half_sse_loss(input, target):
    """The seed's error E = Σ ½(target − out)², summed over outputs and batch."""
    return 0.5 * F.mse_loss(input, target, reduction="sum")


LOSSES = {"half-sse": half_sse_loss, "mse": F.mse_loss}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}


def make_optimizer(params, args):
    """torch.optim's optimizer from the description's optimizer section ({"name", argument...})."""
    args = dict(args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    return OPTIMIZERS[args.pop("name")](params, **args)


class SharedBiasLinear(nn.Module):
    """y = x @ W.T + b with one scalar b per layer, kept as a buffer: in state_dict, never trained."""

    def __init__(self, in_features, out_features, **factory):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.register_buffer("bias", torch.zeros((), **factory))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class MLP(nn.Module):
    """layers[k] (Linear) then activation[k], for every layer k."""

    def __init__(self, sizes, activations, bias="per-neuron", dtype=torch.float64, device="cpu"):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        if bias == "shared-frozen":
            make = lambda i, o: SharedBiasLinear(i, o, **factory)
        else:
            make = lambda i, o: nn.Linear(i, o, bias=bias == "per-neuron", **factory)
        self.layers = nn.ModuleList(make(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.activations = [ACTIVATIONS[a] for a in activations]
        self.nets = []

    def forward(self, x, keep_deltas=True):
        self.nets = []
        for layer, act in zip(self.layers, self.activations):
            net = layer(x)
            if keep_deltas and net.requires_grad:
                net.retain_grad()  # autograd's dE/dnet: the layer's delta
            self.nets.append(net)
            x = act(net)
        return x


def torch_dtype(name):
    return {"float64": torch.float64, "float32": torch.float32}[name]


class Twin:
    """The reference side of the lockstep: model, loss and optimizer in torch."""

    def __init__(self, desc, state, device=None, dtype=None):
        net, run = desc["network"], desc["run"]
        self.device = torch.device(device or run["device"])
        self.dtype = torch_dtype(dtype or run["dtype"])
        self.model = MLP(net["sizes"], net["activation"], net["bias"], self.dtype, self.device)
        self.loss_fn = LOSSES[net["loss"]]
        self.load_state_dict(state)
        self.params = dict(self.model.named_parameters())
        self.optimizer = make_optimizer(list(self.params.values()), desc["optimizer"])

    def load_state_dict(self, state):
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                t.copy_(torch.as_tensor(np.asarray(state[name])))

    def state_dict(self):
        return {name: _numpy(t) for name, t in self.model.state_dict().items()}

    def optimizer_state(self):
        """torch.optim's per-parameter state as {"{param}.{key}": array}, e.g. "layers.0.weight.exp_avg"."""
        out = {}
        for name, p in self.params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{name}.{key}"] = _numpy(value)
        return out

    def tensor(self, a):
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def step(self, x, y):
        """One plain torch training iteration (`--only twin`): no deltas kept, nothing copied out.
        Returns the loss before the update, as a tensor (no device synchronisation)."""
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(self.tensor(x), keep_deltas=False), self.tensor(y))
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train_step(self, x, y):
        self.optimizer.zero_grad(set_to_none=False)
        output = self.model(self.tensor(x))
        loss = self.loss_fn(output, self.tensor(y))
        loss.backward()
        result = {
            "output": _numpy(output),
            "loss": loss.item(),
            "deltas": {f"layers.{k}": _numpy(n.grad) for k, n in enumerate(self.model.nets)},
            "grads": {name: _numpy(p.grad) for name, p in self.params.items()},
        }
        self.optimizer.step()
        result["optimizer_state"] = self.optimizer_state()
        result["state_dict"] = self.state_dict()
        return result


def _numpy(t):
    return t.detach().cpu().numpy().copy()
