"""Code whose loop is its own: adapters that make the plug-in protocol out of what such code exposes
(docs/conventions.md shows each on a real shape of code). The harness hands each batch and reads
what it can; what it cannot read is NOT_EXPOSED, a stage "not reported" (never passed).

    from_batch_method(net, step, params, ...)   a class whose method fits one batch and updates itself
                                                (net.train_batch(X, y)): the harness reads the
                                                parameters after it (stage param), the loss if the
                                                method returns it, the output if given a forward,
                                                the gradients only if given where they are kept.
    from_layers(layers, loss, desc, ...)        a list of layers with forward(x) / backward(dout): the
                                                harness drives forward, the loss's gradient, backward
                                                (every stage: the dout entering each layer is its delta)
                                                and the update (the description's plain SGD, or `update`).
    from_loss_function(loss, params, desc, ...) one loss(X, y) -> (loss, grads) over a dict of
                                                parameters (the course assignments' model.loss): the
                                                harness updates the dict by the description's plain SGD
                                                (or `update`), output only if given a forward.

Each returns an object with load_state_dict/train_step; `conventions=` (a Conventions or its dict)
declares its layout and names, converted by the harness (conventions.py). The harness's own SGD is
θ ← θ − lr·g with the description's lr: a description with momentum, weight decay, parameter groups,
another optimizer or a schedule is refused (exit 2) unless the code's own `update` is given.
"""
import numpy as np

from .contract import NOT_EXPOSED
from .conventions import ConventionError


def plain_sgd_lr(desc, adapter):
    """The description's learning rate, if its optimizer is plain SGD (the harness's own update);
    else ConventionError saying to pass the code's own update."""
    opt = desc["optimizer"]
    plain = (opt["name"] == "sgd" and not opt.get("momentum") and not opt.get("weight_decay")
             and not opt.get("maximize") and not opt.get("param_groups") and not desc.get("scheduler")
             and not desc.get("clip"))
    if not plain:
        raise ConventionError(f"{adapter}: the harness's own update is plain SGD (θ ← θ − lr·g); this description's "
                              f"optimizer is {opt['name']!r} with {_extras(opt) or 'a scheduler or clipping'}: pass update=... "
                              "(the code's own update)")
    return float(opt["lr"])


class _Params:
    """Where the code keeps its parameters: a dict it holds (read and written by key) or attributes
    of an object (`names` on `owner`)."""

    def __init__(self, params, owner=None):
        self.params, self.owner = params, owner
        if not isinstance(params, dict) and (owner is None or isinstance(params, str)):
            raise ConventionError("params: expected the dict that holds the parameters, or attribute names of the object")

    def read(self):
        if isinstance(self.params, dict):
            return {k: np.array(v, dtype=np.float64) for k, v in self.params.items()}
        return {k: np.array(getattr(self.owner, k), dtype=np.float64) for k in self.params}

    def write(self, state):
        for k, v in state.items():
            value = np.array(v, dtype=np.float64)
            if isinstance(self.params, dict):
                self.params[k] = value
            else:
                setattr(self.owner, k, value)


class BatchMethod:
    """from_batch_method's object (see the module docstring)."""

    def __init__(self, net, step, params, forward=None, grads=None, conventions=None):
        self.step, self.forward, self.grads = step, forward, grads
        self.store = _Params(params, net)
        if conventions is not None:
            self.conventions = conventions

    def load_state_dict(self, state):
        self.store.write(state)

    def train_step(self, x, y):
        output = self.forward(x) if self.forward is not None else NOT_EXPOSED  # before the update
        returned = self.step(x, y)
        loss = returned if isinstance(returned, (int, float, np.floating, np.ndarray)) else NOT_EXPOSED
        grads = dict(self.grads()) if self.grads is not None else NOT_EXPOSED
        return {"output": output, "loss": loss, "grads": grads, "state_dict": self.store.read()}


def from_batch_method(net, step, params, *, forward=None, grads=None, conventions=None):
    """An implementation from code that fits one batch itself: `step(x, y)` (net.train_batch, say)
    updates `net`; `params` the dict holding its parameters or their attribute names on `net`;
    `forward(x)` its output (optional: else stage output is not reported); `grads()` the dict of the
    last step's gradients (optional: else stage grad is not reported). The loss is what step returns
    when that is a number (else not reported)."""
    return BatchMethod(net, step, params, forward, grads, conventions)


class Layers:
    """from_layers's object (see the module docstring)."""

    def __init__(self, layers, loss, desc, params, grads, update, conventions):
        self.layers, self.loss, self.params, self.grads = list(layers), loss, params, grads
        self.update = update
        self.lr = None if update is not None else plain_sgd_lr(desc, "from_layers")
        self.names = self._module_names(desc["network"])
        if conventions is not None:
            self.conventions = conventions

    def _module_names(self, network):
        """{layer index: torch's module name}: a layer list's module i is layer i; in the MLP form,
        the k-th layer with parameters is layers.k (its dout is dE/dnet_k, the MLP form's delta)."""
        if "layers" in network:
            return {i: f"layers.{i}" for i in range(len(self.layers))}
        owners = [i for i, layer in enumerate(self.layers) if all(hasattr(layer, p) for p in self.params)]
        return {i: f"layers.{k}" for k, i in enumerate(owners)}

    def _tensors(self, attrs):
        """{torch name: the layer's array} for every layer with parameters, attrs (weight, bias)."""
        out = {}
        for i, module in self.names.items():
            layer = self.layers[i]
            for attr, leaf in zip(attrs, ("weight", "bias")):
                if hasattr(layer, attr):
                    out[f"{module}.{leaf}"] = np.array(getattr(layer, attr), dtype=np.float64)
        return out

    def load_state_dict(self, state):
        for i, module in self.names.items():
            for attr, leaf in zip(self.params, ("weight", "bias")):
                if f"{module}.{leaf}" in state:
                    setattr(self.layers[i], attr, np.array(state[f"{module}.{leaf}"], dtype=np.float64))

    def train_step(self, x, y):
        out = x
        for layer in self.layers:
            out = layer.forward(out)
        loss, dout = self.loss(out, y)
        deltas = {}
        for i in reversed(range(len(self.layers))):
            if i in self.names:
                deltas[self.names[i]] = np.array(dout, dtype=np.float64)
            dout = self.layers[i].backward(dout)
        grads = self._tensors(self.grads)
        if self.update is not None:
            self.update(self.layers)
        else:
            for i in self.names:
                for attr, grad in zip(self.params, self.grads):
                    if hasattr(self.layers[i], attr):
                        setattr(self.layers[i], attr, getattr(self.layers[i], attr) - self.lr * getattr(self.layers[i], grad))
        return {"output": out, "loss": loss, "grads": grads, "deltas": deltas, "state_dict": self._tensors(self.params)}


def from_layers(layers, loss, desc, *, params=("W", "b"), grads=("dW", "db"), update=None, conventions=None):
    """An implementation from a list of layers, each with forward(x) and backward(dout) -> dx that
    keeps its parameters and gradients as attributes (`params`: weight, bias; `grads`: theirs), and
    `loss(output, y) -> (loss, dloss/doutput)`. The harness runs forward, the loss, backward and
    the update: the description's plain SGD, or `update(layers)` (the code's own)."""
    return Layers(layers, loss, desc, params, grads, update, conventions)


class LossFunction:
    """from_loss_function's object (see the module docstring)."""

    def __init__(self, loss, params, desc, forward, update, conventions):
        self.loss, self.forward, self.update = loss, forward, update
        self.store = _Params(params)
        self.lr = None if update is not None else plain_sgd_lr(desc, "from_loss_function")
        if conventions is not None:
            self.conventions = conventions

    def load_state_dict(self, state):
        self.store.write(state)

    def train_step(self, x, y):
        output = self.forward(x) if self.forward is not None else NOT_EXPOSED
        loss, grads = self.loss(x, y)
        grads = {k: np.array(g, dtype=np.float64) for k, g in grads.items()}
        if self.update is not None:
            self.update(self.store.params, grads)
        else:
            self.store.write({k: v - self.lr * grads[k] for k, v in self.store.read().items() if k in grads})
        return {"output": output, "loss": loss, "grads": grads, "state_dict": self.store.read()}


def from_loss_function(loss, params, desc, *, forward=None, update=None, conventions=None):
    """An implementation from one `loss(x, y) -> (loss, {name: gradient})` over the dict `params`
    it reads (model.loss and model.params in the course assignments). The harness updates `params`
    in place: the description's plain SGD, or `update(params, grads)` (the code's own). `forward(x)`
    gives the output (model.loss(x) with no targets, there), else stage output is not reported."""
    return LossFunction(loss, params, desc, forward, update, conventions)


def _extras(opt):
    extras = [f"{k} = {opt[k]}" for k in ("momentum", "weight_decay", "maximize") if opt.get(k)]
    return ", ".join(extras + (["param_groups"] if opt.get("param_groups") else []))
