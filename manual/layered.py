"""A network given as a list of modules (the description's `layers`), built from manual's modules
and named as torch names an nn.Sequential held as the attribute `layers`:

    layers.0.weight, layers.1.running_mean, layers.1.num_batches_tracked, layers.4.body.0.weight

Each module's output and the gradient of the loss with respect to it are kept (the containers'
outputs[i] and grad_outputs[i]) and named by the module's state-dict prefix, `layers.i` (inside a
Residual, `layers.4.body.j`), in the order the computation makes them: a Residual's body before
the Residual itself (`module_names`).
"""
import numpy as np

from . import (activations, attention, batchnorm, container, conv, dropout, embedding, flatten, modules,
               normalization, pooling, rnn, sequence, transformer)
from .module import Module
from .modules import substitute
from .names import LAYER_REGISTRY

_HOMES = (modules, conv, pooling, batchnorm, normalization, dropout, flatten, activations, container, rnn, sequence,
          attention, transformer, embedding)
# type -> manual's class of torch's name
LAYER_CLASSES = {kind: next(getattr(m, e.cls) for m in _HOMES if hasattr(m, e.cls))
                 for kind, e in LAYER_REGISTRY.items()}
TAKES_DTYPE = ("Linear", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
               "GroupNorm", "RNN", "LSTM", "GRU", "MultiheadAttention", "TransformerEncoderLayer", "Embedding")


def make_module(kind, args, dtype=np.float64, replace=None, *where):
    """Module `kind` built from the description's arguments (not a Residual's), through the
    planted-mistake hook (manual.modules.substitute; `where`: the indices and name it answers to)."""
    cls = substitute(LAYER_CLASSES[kind], replace, *where)
    extra = {"dtype": dtype} if kind in TAKES_DTYPE else {}
    own = LAYER_REGISTRY[kind].own  # the project's own arguments (e.g. causal): attributes, not torch's
    module = cls(**{k: v for k, v in args.items() if k not in own}, **extra)
    for key in own:
        if key in args:
            setattr(module, key, args[key])
    return module


def make_sequential(layers, dtype=np.float64, replace=None, prefix="layers"):
    """A container.Sequential of the normalised `layers`; module i answers to the planted-mistake
    hook as (cls, i), (cls, i − n) and (cls, "layers.i") (nested ones by name only)."""
    built, n = [], len(layers)
    for i, layer in enumerate(layers):
        name = f"{prefix}.{i}"
        where = (i, i - n, name) if prefix == "layers" else (name,)
        args = {k: v for k, v in layer.items() if k != "type"}
        if layer["type"] == "Residual":
            body = make_sequential(args["layers"], dtype, replace, f"{name}.body")
            built.append(substitute(container.Residual, replace, *where)(body))
        else:
            built.append(make_module(layer["type"], args, dtype, replace, *where))
    return container.Sequential(*built)


def walk(seq, prefix="layers"):
    """(name, module, container, index) of every module of `seq`, a Residual's body before the
    Residual (the order the forward pass completes them)."""
    for i, m in enumerate(seq):
        name = f"{prefix}.{i}"
        if isinstance(m, container.Residual):
            yield from walk(m.body, f"{name}.body")
        yield name, m, seq, i


class Layered(Module):
    """The network of a layer list: `layers`, a Sequential, as torch's module attribute; the loss's
    input is the last module's output. `replace`: planted mistakes (manual.modules.substitute)."""

    def __init__(self, layers, dtype=np.float64, replace=None):
        self.layers = make_sequential(layers, dtype, replace)
        self.names = [name for name, *_ in walk(self.layers)]
        self.types = {name: type(m).__name__ for name, m, *_ in walk(self.layers)}
        self.dropouts = {name: m for name, m, *_ in walk(self.layers) if isinstance(m, dropout.Dropout)}

    def named_children(self):
        yield "layers", self.layers

    def forward(self, x):
        return self.layers(x)

    def backward(self, grad_output, input_grad=False):
        """The network's input needs no gradient: the first module skips its grad_input where it can
        (Linear, the convolutions), as autograd does; `input_grad=True` returns it."""
        return self.layers.backward(grad_output, input_grad=input_grad)

    def set_masks(self, masks):
        """Hand each dropout module its keep-mask for the next forward ({name: bool array}); None
        (or a missing name) lets it draw its own."""
        for name, m in self.dropouts.items():
            m.mask = None if masks is None else masks.get(name)

    def set_carry(self, carry):
        """[run] stateful: every recurrent module (one with reset_state) carries its final state to
        the next batch (`carry`), starting from zeros."""
        for _, m, *_ in walk(self.layers):
            if hasattr(m, "reset_state"):
                m.carry = carry
                m.reset_state()

    def carried(self):
        """{module: its carried state `hx`} of every recurrent module (to put back after an evaluation pass)."""
        return {m: m.hx for _, m, *_ in walk(self.layers) if hasattr(m, "reset_state")}

    def states(self):
        """{"layers.1.h": array, ...}: the per-time-step states of the last forward of every module
        that keeps them (`states`, a dict {key: (L, D, T, N, H)}), in module order (not copies)."""
        return {f"{name}.{k}": v for name, m, *_ in walk(self.layers)
                for k, v in (getattr(m, "states", None) or {}).items()}

    def grad_states(self):
        """{"layers.1.h": dE/dh_t, ...} of the last backward (each module's `grad_states`)."""
        return {f"{name}.{k}": v for name, m, *_ in walk(self.layers)
                for k, v in (getattr(m, "grad_states", None) or {}).items()}

    def outputs(self):
        """{name: output} of the last forward, in the order they were computed (not copies)."""
        return {name: seq.outputs[i] for name, _, seq, i in walk(self.layers)}

    def grad_outputs(self):
        """{name: dE/d output} of the last backward, in module order as the outputs (the lockstep
        compares them last module first, as backward makes them; not copies)."""
        return {name: seq.grad_outputs[i] for name, _, seq, i in walk(self.layers)}

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.zero_grad(set_to_none)

