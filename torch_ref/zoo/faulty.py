"""How a planted mistake is built and described: the mechanism under torch_ref/zoo/mistakes.py (the
registry of mistakes) and torch_ref/zoo/planted.py (the tests' planted bugs).

A `Mistake` names what it replaces, `{(owner, method): faulty function}`: the owner is a class of
the manual engine (a layer, activation, loss, optimizer or schedule, or manual.trainer.Trainer for
a mistake in the training step itself) or a module whose factory function it replaces. `build`
makes, for each owner class, a subclass with that one method replaced, and hands them to the
engine's builder, `manual.trainer.Trainer(desc, replace=...)` (the hook is
manual.modules.substitute): the engine builds the faulty component where it would have built
the correct one. Nothing is patched and no live object changes class; with no mistake, `build`
is the engine itself (the control of every mistake).

The descriptions the mistakes run on are here too (`worked`, `random_net`, ...), so that both
catalogues and the zoo draw them from one place.
"""
from dataclasses import dataclass, field
from functools import cache, partial

import numpy as np

import manual.trainer
from ..description import spec
from ..description.files import bundled_path


# --- the mechanism --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Mistake:
    """One planted mistake: what it is, what it replaces, the description it runs on, where the
    lockstep must catch it, where it has a meaning, and whether the user-facing zoo shows it.

    Called with a parsed description it is a plug-in factory (`--impl torch_ref.zoo.mistakes:Name`):
    the manual engine with the mistake planted."""
    id: str
    what: str                 # one sentence: the mistake
    replaces: dict            # {(owner, method) or (owner, method, layer k): the faulty function}
    description: object       # () -> the parsed description it is run on
    stage: str                # where it must be caught: (iteration, stage, tensor[, at])
    tensor: str
    iteration: int = 0
    at: str = ""              # a state tensor's time step: the start of Mismatch.at, e.g.
                              # "h at t = 4, layer 0, direction 0" ("": not a state tensor)
    needs: dict = field(default_factory=dict)  # {"loss": (...), "module": (...), ...}: where it applies
    zoo: bool = False         # shown by `backprop-check zoo` (else a test-only planted bug)
    checks: tuple = (("float64", "free"),)     # the (dtype, mode) runs that must catch it there

    def __call__(self, desc):
        return build(desc, self.replaces)

    def described(self, dtype="float64"):
        """The description it runs on, in `dtype`."""
        desc = self.description()
        return desc if desc["run"]["dtype"] == dtype else {**desc, "run": {**desc["run"], "dtype": dtype}}

    def caught_as_expected(self, mismatch):
        """Whether `mismatch` (a lockstep Mismatch, or None) is where this mistake must be caught:
        its iteration, stage and tensor, and for a state tensor the time step (`at`, a prefix of
        the mismatch's own; none where `at` is empty)."""
        if mismatch is None or (mismatch.iteration, mismatch.stage, mismatch.name) != (
                self.iteration, self.stage, self.tensor):
            return False
        return mismatch.at.startswith(self.at) if self.at else not mismatch.at

    def applies(self, desc):
        """True when the mistake has a meaning on `desc`'s network (loss, bias, optimizer, activation;
        for a layer list's mistake, a module of its type: none applies to an MLP)."""
        net = desc["network"]  # (a layer list has neither bias mode nor activations)
        have = {"loss": net["loss"], "bias": net.get("bias", "per-neuron"),
                "optimizer": desc["optimizer"]["name"], "activation": net.get("activation", []),
                "module": module_types(net.get("layers", []))}
        for key, allowed in self.needs.items():
            if key == "module":  # a layer list's mistake: the network must have such a module
                if not set(allowed) & have["module"]:
                    return False
                continue
            if key == "momentum":
                if (desc["optimizer"].get("momentum") or 0) == 0:
                    return False
                continue
            values = have[key] if isinstance(have[key], list) else [have[key]]
            if key == "activation":
                if not any(v in allowed for v in values):
                    return False
            elif not all(v in allowed for v in values):
                return False
        return True


def module_types(layers):
    """The torch.nn types in a description's layer list, a Residual's body included."""
    found = set()
    for layer in layers:
        found.add(layer["type"])
        found |= module_types(layer.get("layers", []))
    return found


def build(desc, replaces=None):
    """The manual engine for `desc` with `replaces` ({(owner, method[, layer]): function}) planted;
    with none, the engine itself (manual.trainer.Trainer)."""
    replace = stand_ins(replaces or {})
    trainer = replace.get(manual.trainer.Trainer, manual.trainer.Trainer)
    return trainer(desc, replace=replace)


def stand_ins(replaces):
    """The engine's `replace` map for `replaces`: each owner class (and each subclass that inherits
    the replaced methods from it, as a patch on the owner would reach them) mapped to a subclass
    with the faulty methods, keyed (class, layer) when the mistake is in one layer only; an owner
    that lacks the method (an abstract base, e.g. manual.losses.Loss) stands for every subclass,
    each keeping its own method for `correct` to call. A module owner: its function `method` is
    mapped to the faulty function itself."""
    grouped = {}
    for (owner, method, *layer), fn in replaces.items():
        grouped.setdefault((owner, *layer), {})[method] = fn
    replace = {}
    for (owner, *layer), methods in grouped.items():
        if not isinstance(owner, type):  # a module: its factory functions are replaced outright
            replace.update({getattr(owner, name): fn for name, fn in methods.items()})
            continue
        for cls in _reached(owner, methods):
            replace[(cls, *layer) if layer else cls] = _stand_in(cls, tuple(sorted(methods.items())))
    return replace


def _reached(owner, methods):
    """`owner` and its subclasses that a replacement of `methods` on `owner` reaches."""
    found, todo = [], [owner]
    while todo:
        cls = todo.pop()
        if "planted" in vars(cls):  # a stand-in made earlier
            continue
        if all(not hasattr(owner, m) or getattr(cls, m) is getattr(owner, m) for m in methods):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@cache  # one stand-in class per (class, methods): a mistake built again reuses its classes
def _stand_in(cls, methods):
    body = dict(methods, planted=True, __module__=__name__, __doc__=f"{cls.__name__} with a planted mistake")
    return type(f"Faulty{cls.__name__}", (cls,), body)


def correct(self, method):
    """The engine's own `method` of a stand-in `self` (the one its faulty method replaced), for a
    mistake that changes what the correct method computes (e.g. a sign) rather than rewriting it."""
    return getattr(super(type(self), self), method)


def broken_adam(name, update, second_moment=lambda g: g * g):
    """An Adam step (no weight decay, no amsgrad) that keeps torch's moment bookkeeping and changes
    θ by `update(self, m, v, t)`: the shared body of every deliberately wrong Adam, which differ
    only in their planted line."""
    def step(self):
        beta1, beta2 = self.betas
        for _, p, state, g in self._grads(self.weight_decay):
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
            state["step"] += 1
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * second_moment(g)
            p.data -= update(self, m, v, state["step"])
    step.__name__ = name
    return step


# --- the descriptions the mistakes run on ---------------------------------------------------------

def worked(steps=3):
    """the worked example: 2-2-2 sigmoid, shared frozen biases, ½·SSE, SGD 0.5"""
    desc = spec.load(bundled_path("worked_example"))
    desc["run"] = {**desc["run"], "steps": steps}
    return desc


def random_net(sizes, activation, loss="mse", bias="per-neuron", batch_size=4, n=8, steps=3,
               optimizer=None, seed=0, **sections):
    """A parsed description with seeded weights and random data (`sections`: e.g. a scheduler)."""
    return spec.parse({
        "network": {"sizes": sizes, "activation": activation, "bias": bias, "loss": loss},
        "init": {"seed": seed},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": n, "seed": seed + 1}, "batch_size": batch_size},
        "run": {"steps": steps, "dtype": "float64"},
        **sections,
    })


def net(*args, **kwargs):
    """`random_net(*args, **kwargs)`, made when a mistake is run (a catalogue entry's description)."""
    return partial(random_net, *args, **kwargs)


def square():
    """3-3-3 tanh, no biases, MSE: square weights, so a transposed gradient has the right shape"""
    return random_net([3, 3, 3], "tanh", bias="none")


def minibatch():
    """3-4-2 tanh → identity, per-neuron biases, MSE (mean), batches of 4, SGD"""
    return random_net([3, 4, 2], ["tanh", "identity"])


def classifier():
    """4-5-3 tanh → logits, softmax cross-entropy on class indices (mean), batches of 4, SGD"""
    return random_net([4, 5, 3], ["tanh", "identity"], loss="cross_entropy")


def momentum():
    """3-4-2 tanh → identity, MSE, batches of 4, SGD with momentum 0.9"""
    return random_net([3, 4, 2], ["tanh", "identity"], optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})


def adam():
    """3-4-2 tanh → identity, MSE, batches of 4, Adam (lr 0.01)"""
    return random_net([3, 4, 2], ["tanh", "identity"], optimizer={"name": "adam", "lr": 0.01})


# --- the layer lists' descriptions (torch_ref/zoo/mistakes_layers.py) -----------------------------

def shipped(name, steps=3):
    """() -> the bundled description `name`, cut to `steps` iterations."""
    def described():
        desc = spec.load(bundled_path(name))
        desc["run"] = {**desc["run"], "steps": steps}
        return desc
    described.__doc__ = f"torch_ref/specs/{name}.toml, {steps} iterations"
    return described


def conv_stack(steps=3):
    """Conv2d 3×3 pad 1 → ReLU → Conv2d 3×3 stride 2 pad 1 dilation 2 → ReLU → AvgPool2d 2 → Linear, 10×10 bars

    The second convolution has every geometry a backward can get wrong (stride, padding, dilation)
    and a module before it, whose delta is its input gradient; the pooling has one too."""
    return spec.parse({
        "network": {"input_shape": [1, 10, 10], "loss": "cross_entropy", "layers": [
            {"type": "Conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},        # (3, 10, 10)
            {"type": "ReLU"},
            {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1,
             "dilation": 2},                                                                # (4, 4, 4)
            {"type": "ReLU"},
            {"type": "AvgPool2d", "kernel_size": 2},                                        # (4, 2, 2)
            {"type": "Flatten"},
            {"type": "Linear", "out_features": 3}]},
        "init": {"seed": 3},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "data": {"images": {"name": "bars", "n": 16, "size": 10, "seed": 4}, "batch_size": 8},
        "run": {"steps": steps, "dtype": "float64"},
    })


# --- the sequence modules' descriptions (torch_ref/zoo/mistakes_rnn.py) ---------------------------

def recurrent_raw(kind, steps=2, stateful=False, **args):
    """The description (as written, unparsed) of recurrent_net."""
    return {
        "network": {"input_shape": [5, 3], "loss": "mse", "layers": [
            {"type": kind, "hidden_size": 4, "batch_first": True, **args},
            {"type": "Flatten"}, {"type": "Linear", "out_features": 2}]},
        "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4},
        "run": {"steps": steps, "dtype": "float64", "stateful": stateful},
    }


def recurrent_net(kind, steps=2, stateful=False, **args):
    """() -> 5 steps × 3 features → `kind` (RNN, LSTM or GRU; hidden 4, batch first, `args`) →
    Flatten → Linear(2), MSE on random data, batches of 4, SGD, `steps` iterations: every time
    step's output feeds the loss, so every state's gradient has a share of its own."""
    def described():
        return spec.parse(recurrent_raw(kind, steps, stateful, **args))
    extra = "".join(f", {k} {v}" for k, v in args.items())
    described.__doc__ = (f"5 steps × 3 features → {kind}(hidden 4{extra}) → Flatten → Linear(2), MSE, batches "
                         f"of 4{', stateful' if stateful else ''}, {steps} iterations")
    return described
