"""Parameters, linear layers and the multilayer perceptron in numpy, named and shaped as in torch.nn.

Every module has `forward(x)`, which caches exactly what its backward needs, and
`backward(grad_output)`, which returns `grad_input` and accumulates parameter
gradients into `Parameter.grad` with `+=` (so `zero_grad()` means what it means in torch).
All arrays are batched: the first axis is the batch, N.

Modules are called as torch's are, `module(x)` (the same as `module.forward(x)`); constructors
take torch's arguments, in torch's order, with torch's defaults (the differences are listed in each
class). The one general difference: arrays default to float64 (numpy's), where torch's default
dtype is float32.

The activations are in activations.py, the base class in module.py; this file holds Parameter,
Linear, SharedBiasLinear and the MLP that chains them.
"""
import sys
from functools import partial

import numpy as np

from .activations import ACTIVATIONS
from .module import Module
from .names import build


class Parameter:
    """A numpy array with a gradient beside it. `data` is updated in place by the optimizer.

    `grad` follows torch: None until a backward gives one, None again after zero_grad()
    (torch's set_to_none=True), so the first gradient of a step is taken as computed, without
    a zero array to add it to, and a gradient handed out earlier keeps its values.
    """

    def __init__(self, data, requires_grad=True):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._released = None  # the last gradient zero_grad() let go of (its storage may be reused)

    def zero_grad(self, set_to_none=True):
        """grad ← None (torch's default), or grad ← 0 in place with set_to_none=False."""
        if self.grad is None:
            return
        if set_to_none:
            self._released, self.grad = self.grad, None
        else:
            self.grad[...] = 0

    def accumulate(self, grad):
        """grad ← grad + g, as autograd's AccumulateGrad does it: the first g is kept as it is;
        later ones are added in place when nothing else holds the gradient, and into a new array
        when something does, so a gradient handed out earlier keeps its values."""
        if self.grad is None:
            self.grad = np.asarray(grad)
        elif sys.getrefcount(self.grad) == 2:  # this attribute and getrefcount's own argument
            self.grad += grad
        else:
            self.grad = self.grad + grad

    def accumulate_matmul(self, a, b):
        """grad ← grad + a @ b.

        A first gradient is computed straight into the storage of the gradient zero_grad() let go
        of, when nothing else holds that array any more (CPython's reference count, the test numpy
        itself uses to reuse temporaries): a large layer then does not allocate, and page-fault, a
        fresh array at every step, and a gradient handed out earlier still keeps its values.
        """
        if self.grad is not None:
            self.accumulate(a @ b)
            return
        spare, self._released = self._released, None
        # reused only if nothing else refers to it: just `spare` and getrefcount's own argument
        reusable = spare is not None and spare.dtype == a.dtype and sys.getrefcount(spare) == 2
        self.grad = np.matmul(a, b, out=spare if reusable else None)


def _check_device(device):
    if device not in (None, "cpu"):
        raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")


class Linear(Module):
    """A fully connected layer, torch.nn.Linear(in_features, out_features, bias=True, device=None, dtype=None).

        y = x @ W.T + b          x: (N, in)  W: (out, in)  b: (out,)  y: (N, out)
        grad_W = grad_y.T @ x    (out, in)
        grad_b = grad_y.sum(0)   (out,)
        grad_x = grad_y @ W      (N, in)

    bias: a bool, as torch's (False: no bias, `self.bias` is None). dtype: None is float64
    (torch's default is float32). The parameters start at zero (torch draws them at random):
    manual.init or load_state_dict sets them. Inputs are batched, (N, in), or (N, *, in) as torch's.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        if isinstance(bias, str):
            raise TypeError(f"Linear's bias is a bool, as torch's, got {bias!r} (the seed's shared frozen "
                            "bias is SharedBiasLinear; MLP takes the description's bias mode)")
        _check_device(device)
        dtype = np.float64 if dtype is None else dtype
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None

    def forward(self, x):
        self.x = x  # (N, in)
        y = x @ self.weight.data.T  # (N, out)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output, input_grad=True):
        """Accumulates grad_W (and grad_b when the bias is trained); returns grad_x, or None when
        `input_grad` is False (the network's input needs none, and it would cost a third of the
        layer's work). Inputs (N, *, in), as torch's (a Linear over every time step of a
        sequence), are summed over every leading position, flattened to (N·…, in)."""
        x, g = self.x, grad_output
        if x.ndim != 2:
            x, g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
        self.weight.accumulate_matmul(g.T, x)  # (out, in)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(g.sum(axis=0))  # (out,)
        return grad_output @ self.weight.data if input_grad else None  # (N, in)

    def named_parameters(self, prefix=""):
        yield f"{prefix}weight", self.weight
        if self.bias is not None:
            yield f"{prefix}bias", self.bias


class SharedBiasLinear(Linear):
    """The seed's layer, as torch_ref.twin.model.SharedBiasLinear(in_features, out_features, device, dtype):

        y = x @ W.T + b          W: (out, in)  b: ()  one scalar added to every neuron of the layer

    b is never trained: it has no gradient (grad_W and grad_x as Linear's). torch keeps it as a
    buffer; here it is a frozen Parameter (requires_grad=False), so that it is in
    named_parameters() — the state dict: `weight` (out, in) and a 0-d `bias` — and not in
    parameters(), the trained ones.
    """

    def __init__(self, in_features, out_features, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.bias = Parameter(np.zeros((), self.weight.data.dtype), requires_grad=False)


BIAS_MODES = ("per-neuron", "shared-frozen", "none")


def substitute(component, replace=None, *layers):
    """What to build where the engine asks for `component` (a class or a factory): its stand-in in
    `replace`, else `component` itself. `replace` maps a component to its stand-in, or
    (component, k) to the stand-in of layer k's only (k < 0 counts from the output layer, as list
    indices do; `layers` are the indices the caller's instance answers to). This is the one hook
    through which torch_ref/zoo/mistakes.py builds the engine with a planted mistake; the engine
    itself passes no `replace` and builds what it names. A registry name whose arguments are
    adjusted (manual/names.py's `build`, a functools.partial of it) keeps its adjustment around
    the stand-in of its class."""
    if not replace:
        return component
    if isinstance(component, partial) and component.func is build:
        entry, cls = component.args
        return partial(build, entry, substitute(cls, replace, *layers))
    for k in layers:
        if (component, k) in replace:
            return replace[(component, k)]
    return replace.get(component, component)


def linear_layer(in_features, out_features, bias="per-neuron", dtype=np.float64, replace=None, *layers):
    """The layer for the description's `network.bias` mode (`replace`, `layers`: see `substitute`):

        "per-neuron"     Linear(in, out, bias=True)      torch's, b: (out,), trained
        "shared-frozen"  SharedBiasLinear(in, out)        the seed's, b: (), never trained
        "none"           Linear(in, out, bias=False)
    """
    if bias == "shared-frozen":
        return substitute(SharedBiasLinear, replace, *layers)(in_features, out_features, dtype=dtype)
    if bias not in BIAS_MODES:
        raise ValueError(f"bias mode must be one of {BIAS_MODES}, got {bias!r}")
    return substitute(Linear, replace, *layers)(in_features, out_features, bias=bias == "per-neuron", dtype=dtype)


class MLP(Module):
    """Linear → activation, repeated: layer k maps sizes[k] to sizes[k+1].

        net_k = a_{k-1} @ W_k.T + b_k      (N, sizes[k+1])     a_{-1} = x
        a_k   = f_k(net_k)
        delta_k = dE/dnet_k = f_k'(net_k) * (delta_{k+1} @ W_{k+1})   chain rule, (N, sizes[k+1])

    Parameter names are torch's state_dict keys: `layers.{k}.weight`, `layers.{k}.bias`.
    `bias` is the description's mode (see `linear_layer`), as torch_ref.twin.model.MLP's. `replace`:
    stand-ins for the layers and activations it builds (see `substitute`; None for the engine).
    """

    def __init__(self, sizes, activations, bias="per-neuron", dtype=np.float64, activation_args=None,
                 replace=None):
        n = len(sizes) - 1
        self.layers = [linear_layer(i, o, bias, dtype, replace, k, k - n)
                       for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]))]
        activation_args = activation_args or [{} for _ in activations]
        self.activations = [substitute(ACTIVATIONS[name], replace, k, k - n)(**args)
                            for k, (name, args) in enumerate(zip(activations, activation_args))]
        self.deltas = [None] * len(self.layers)

    def forward(self, x):
        for layer, act in zip(self.layers, self.activations):
            x = act.forward(layer.forward(x))
        return x

    def backward(self, grad_output, input_grad=False):
        """Keeps every layer's delta; returns dE/dx only if `input_grad` (x is data, as in torch)."""
        for k in reversed(range(len(self.layers))):
            self.deltas[k] = self.activations[k].backward(grad_output)
            grad_output = self.layers[k].backward(self.deltas[k], input_grad=k > 0 or input_grad)
        return grad_output

    def named_parameters(self, prefix=""):
        """Every parameter, trained or frozen, under its state_dict name."""
        for k, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}layers.{k}.")

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.zero_grad(set_to_none)
