"""The twin of a layer list: the description's modules as torch.nn modules in an nn.Sequential held
as the attribute `layers` (state-dict names `layers.0.weight`, `layers.1.running_mean`, ...), a
Residual as a small module with `body`, dropout applied with the keep-mask handed in.

Every module's output is kept by a forward hook, in the order the forward pass completes them (a
Residual's body before the Residual), and retains its gradient: the deltas dE/d(output).
"""
import torch
from torch import nn

from manual.names import LAYER_REGISTRY
from . import attention

from .recurrent import RECURRENT, LastStep, Recurrent


class Residual(nn.Module):
    """x + body(x), body an nn.Sequential (torch has no such class; this project's Residual)."""

    def __init__(self, *modules):
        super().__init__()
        self.body = nn.Sequential(*modules)

    def forward(self, x):
        return x + self.body(x)


class MaskedDropout(nn.Module):
    """nn.Dropout / nn.Dropout2d with the keep-mask handed in (`mask`, bool: (N, *) for Dropout,
    (N, C) for Dropout2d), applied with torch's own scaling, x · mask / (1 − p): what nn.Dropout
    computes for the elements its generator keeps (tests/test_layers.py shows it). With no mask,
    torch's own dropout (F.dropout / F.dropout2d) draws one; in eval mode, the identity."""

    def __init__(self, p=0.5, channels=False):
        super().__init__()
        self.p, self.channels, self.mask = p, channels, None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        if self.mask is None:
            return (nn.functional.dropout2d if self.channels else nn.functional.dropout)(x, self.p, True)
        keep = self.mask.reshape(self.mask.shape + (1,) * (x.dim() - self.mask.dim()))
        return x * (keep.to(x.dtype) / (1.0 - self.p))


def make_module(layer, factory):
    """The torch.nn module of one normalised layer (factory: dtype and device)."""
    kind, args = layer["type"], {k: v for k, v in layer.items() if k != "type"}
    if kind == "Residual":
        return Residual(*(make_module(m, factory) for m in args["layers"]))
    if kind in ("Dropout", "Dropout2d"):
        return MaskedDropout(args["p"], channels=kind == "Dropout2d")
    if kind in RECURRENT:  # torch's class with forward(x) -> output (twin/recurrent.py)
        return RECURRENT[kind](**args, **factory)
    if kind == "LastStep":
        return LastStep()
    # self-attention: the twin's subclasses (forward(x), the causal mask, the weights kept)
    cls = getattr(attention if kind in attention.SELF_ATTENTION else nn, LAYER_REGISTRY[kind].cls)
    takes_factory = kind in ("Linear", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d",
                             "LayerNorm", "GroupNorm", "MultiheadAttention", "TransformerEncoderLayer", "Embedding")
    return cls(**args, **(factory if takes_factory else {}))


def walk(seq, prefix="layers"):
    """(name, module) of every module of an nn.Sequential, a Residual's body before the Residual."""
    for i, m in enumerate(seq):
        name = f"{prefix}.{i}"
        if isinstance(m, Residual):
            yield from walk(m.body, f"{name}.body")
        yield name, m


class Layered(nn.Module):
    """`layers`, an nn.Sequential of the description's modules; forward keeps every module's
    output (`nets`, named `names`) and, when asked, retains its gradient."""

    def __init__(self, layers, dtype=torch.float64, device="cpu"):
        super().__init__()
        self.layers = nn.Sequential(*(make_module(m, {"dtype": dtype, "device": device}) for m in layers))
        found = list(walk(self.layers))
        self.names = [name for name, _ in found]
        self.dropouts = {name: m for name, m in found if isinstance(m, MaskedDropout)}
        self.recurrent = {name: m for name, m in found if isinstance(m, Recurrent)}
        self.attention = {name: m for name, m in found if isinstance(m, attention.SELF_ATTENTION_CLASSES)}
        self.nets, self.keep = [], False
        self.perturb = None  # (the rounding second opinion's hook: not used for a layer list)
        for _, m in found:
            m.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.keep:
            if output.requires_grad:
                output.retain_grad()
            self.nets.append(output)

    def set_masks(self, masks, device):
        """Hand each dropout module its keep-mask ({name: bool array}; None: torch draws its own)."""
        for name, m in self.dropouts.items():
            mask = None if masks is None else masks.get(name)
            m.mask = None if mask is None else torch.as_tensor(mask, device=device)

    def set_carry(self, carry):
        """[run] stateful: every recurrent module carries its final state to the next batch
        (detached), starting from zeros."""
        for m in self.recurrent.values():
            m.carry = carry
            m.reset_state()

    def carry_from(self, states):
        """Set the state every recurrent module carries into the next batch from a result's
        per-time-step states ({"layers.1.h": (L, D, T, N, H), ...}, Recurrent.carry_from); None:
        zeros. KeyError where a recurrent module's states are missing."""
        for name, m in self.recurrent.items():
            if states is None:
                m.reset_state()
            else:
                m.carry_from(states[f"{name}.h"], states[f"{name}.c"] if m.mode == "LSTM" else None)

    def probe_states(self, deltas):
        """The per-time-step states of every recurrent module of the last forward and their
        gradients, from the deltas ({name: dE/d output}): ({"layers.1.h": tensor, ...}, {...}); and
        every attention module's weights ("layers.0.attn", forward only: no gradient), in module order."""
        states, grad_states = {}, {}
        if not (self.recurrent or self.attention):  # (most nets: nothing to probe, every iteration)
            return states, grad_states
        for name in self.names:
            if name in self.recurrent:
                s, g = self.recurrent[name].probe(deltas[name])
                states.update({f"{name}.{k}": v for k, v in s.items()})
                grad_states.update({f"{name}.{k}": v for k, v in g.items()})
            elif name in self.attention:
                states[f"{name}.attn"] = self.attention[name].states["attn"].detach()
        return states, grad_states

    def forward(self, x, keep_deltas=True):
        self.nets.clear()
        self.keep = keep_deltas
        return self.layers(x)
