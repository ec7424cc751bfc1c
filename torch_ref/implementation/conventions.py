"""Declared conventions: an implementation says once how it stores its tensors, and the harness
converts both ways, so its adapter carries no transposes, reshapes or renames (docs/conventions.md).

    class MyNet:
        conventions = Conventions(weight_layout="in_out", bias_shape="row",
                                  names={"W1": "layers.0.weight", "b1": "layers.0.bias"})

declared on the object the factory returns or on the factory itself (a class attribute does
both), as a `Conventions` or a plain dict of the same fields:

    weight_layout  "out_in" (torch's, the default) or "in_out": the 2-D weights of the MLP form and
                   of a layer list's top-level Linear modules, their gradients and optimizer buffers
    bias_shape     "flat" (torch's (out,), the default), "row" (1, out) or "column" (out, 1)
    names          {your name: torch's name} for parameters, gradients and deltas ("layers.k"), or a
                   function called with each of torch's names that returns yours; unmapped names
                   are torch's
    buffer_names   {your buffer: torch's buffer} in optimizer_state keys "{param}.{buffer}", e.g.
                   {"velocity": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq"}
    optimizer_state_scale
                   what your buffers hold, as a multiple of torch's: a number, "-lr" (v = μv − lr·g
                   is −lr·m), "1-momentum" (v = μv + (1 − μ)g is (1 − μ)·m), "1-beta1", "1-beta2",
                   or a dict {torch's buffer: one of those} (unlisted buffers: 1)

load_state_dict (and load_optimizer_state, in resync mode) gets the implementation's layout and
names; what train_step returns is converted back to torch's before the contract (contract.py)
and the comparison see it. A tensor whose shape fits not the declared layout is bad input
(`ConventionError`, an ImplError: one line naming the key and the tensor, exit 2).
"""
import numpy as np

from ..errors import ImplError

LAYOUTS = ("out_in", "in_out")
BIAS_SHAPES = ("flat", "row", "column")
SCALES = {"-lr": lambda o: -o["lr"], "1-momentum": lambda o: 1 - o.get("momentum", 0.0),
          "1-beta1": lambda o: 1 - o["betas"][0], "1-beta2": lambda o: 1 - o["betas"][1]}
FIELDS = ("weight_layout", "bias_shape", "names", "buffer_names", "optimizer_state_scale")
RESULT_DICTS = ("grads", "state_dict", "deltas", "forward", "optimizer_state")


class ConventionError(ImplError):
    """A declaration that cannot be read, or a tensor it cannot convert: bad input (exit 2), never
    the implementation's failure (the guard lets it through, plugin.Guard.call)."""


class Conventions:
    """How an implementation stores its tensors (the module docstring lists the fields)."""

    def __init__(self, weight_layout="out_in", bias_shape="flat", names=None, buffer_names=None,
                 optimizer_state_scale=1.0):
        self.weight_layout, self.bias_shape = weight_layout, bias_shape
        self.names, self.buffer_names = names or {}, buffer_names or {}
        self.optimizer_state_scale = optimizer_state_scale
        _choice("weight_layout", weight_layout, LAYOUTS)
        _choice("bias_shape", bias_shape, BIAS_SHAPES)
        if not (isinstance(self.names, dict) or callable(self.names)):
            raise ConventionError(f"conventions.names: expected a dict {{your name: torch's name}} or a "
                                  f"function, got {type(names).__name__}")
        if not isinstance(self.buffer_names, dict):
            raise ConventionError(f"conventions.buffer_names: expected a dict {{your buffer: torch's buffer}}, "
                                  f"got {type(buffer_names).__name__}")

    @classmethod
    def of(cls, declared):
        """A Conventions from a Conventions or a dict of its fields (ConventionError naming the field)."""
        if isinstance(declared, cls):
            return declared
        if not isinstance(declared, dict):
            raise ConventionError(f"conventions: expected a torch_ref.Conventions or a dict, got "
                                  f"{type(declared).__name__}")
        unknown = sorted(set(declared) - set(FIELDS))
        if unknown:
            raise ConventionError(f"conventions.{unknown[0]}: not a field (known: {', '.join(FIELDS)})")
        return cls(**declared)

    def scales(self, optimizer):
        """{torch's buffer name: the factor the implementation's buffer holds}, "*" for the rest."""
        given = self.optimizer_state_scale
        table = dict(given) if isinstance(given, dict) else {"*": given}
        out = {}
        for buffer, value in table.items():
            if isinstance(value, str):
                if value not in SCALES:
                    raise ConventionError(f"conventions.optimizer_state_scale: {value!r} is none of "
                                          f"{', '.join(SCALES)} or a number")
                try:
                    value = SCALES[value](optimizer)
                except (KeyError, IndexError, TypeError):
                    raise ConventionError(f"conventions.optimizer_state_scale: {value!r} needs an optimizer "
                                          f"that has it (this one is {optimizer.get('name')!r})") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value == 0:
                raise ConventionError(f"conventions.optimizer_state_scale: expected a non-zero number, got {value!r}")
            out[buffer] = float(value)
        out.setdefault("*", 1.0)
        return out


def declared(impl, desc, factory=None):
    """`impl`, wrapped in a `Declared` when it (or its factory) declares conventions; else itself."""
    found = getattr(impl, "conventions", None)
    if found is None and factory is not None:
        found = getattr(factory, "conventions", None)
    if found is None or isinstance(impl, Declared):
        return impl
    return Declared(impl, Conventions.of(found), desc)


class Declared:
    """An implementation seen through its declared conventions: the plug-in protocol in torch's
    layout and names on the outside, the implementation's own on the inside. `iteration` counts
    train_step calls (the lockstep calls it once per iteration, from 0) for the error messages."""

    def __init__(self, impl, conventions, desc):
        self.impl, self.conventions = impl, conventions
        self.linear = _linear_modules(desc["network"])
        self.modules = [f"layers.{i}" for i in range(_module_count(desc["network"]))]
        self.scale = conventions.scales(desc["optimizer"])
        self.to_torch, self.to_impl, self.shapes = {}, {}, {}
        self.iteration = 0
        for name in ("eval", "load_optimizer_state"):  # only where the implementation has them
            if callable(getattr(impl, name, None)):
                setattr(self, name, getattr(self, "_" + name))

    def load_state_dict(self, state):
        self._learn_names(state)
        self.shapes = {k: np.shape(v) for k, v in state.items()}
        return self.impl.load_state_dict({self.to_impl.get(k, k): self._to_impl(k, v) for k, v in state.items()})

    def train_step(self, x, y, **kwargs):
        result = self.impl.train_step(x, y, **kwargs)
        it, self.iteration = self.iteration, self.iteration + 1
        if not isinstance(result, dict):
            return result  # the contract says what is wrong with it
        out = dict(result)
        for key in RESULT_DICTS:
            if isinstance(result.get(key), dict):
                out[key] = {self._torch_key(key, k): self._to_torch(it, key, k, v) for k, v in result[key].items()}
        return out

    def _eval(self, x):
        return self.impl.eval(x)

    def _load_optimizer_state(self, flat):
        return self.impl.load_optimizer_state({self._impl_key(k): self._to_impl(k, v, True) for k, v in flat.items()})

    # --- names ---------------------------------------------------------------------------------

    def _learn_names(self, state):
        """The table of names both ways, from torch's names (the state's and the modules')."""
        names = self.conventions.names
        torch_names = list(state) + self.modules
        if callable(names):
            self.to_impl = {t: str(names(t)) for t in torch_names}
            self.to_torch = {i: t for t, i in self.to_impl.items()}
        else:
            self.to_torch = dict(names)
            self.to_impl = {t: i for i, t in names.items()}

    def _torch_key(self, key, name):
        if key != "optimizer_state":
            return self.to_torch.get(name, name)
        param, _, buffer = str(name).rpartition(".")
        return f"{self.to_torch.get(param, param)}.{self.conventions.buffer_names.get(buffer, buffer)}"

    def _impl_key(self, flat):
        param, _, buffer = flat.rpartition(".")
        mine = {t: i for i, t in self.conventions.buffer_names.items()}
        return f"{self.to_impl.get(param, param)}.{mine.get(buffer, buffer)}"

    # --- values --------------------------------------------------------------------------------

    def _kind(self, torch_name, optimizer=False):
        """("weight" | "bias" | None, the parameter's name, torch's buffer or None) of a torch name
        (an optimizer_state key "{param}.{buffer}" when `optimizer`)."""
        buffer = None
        if optimizer:
            torch_name, _, buffer = torch_name.rpartition(".")
        module, _, leaf = torch_name.rpartition(".")
        if leaf == "weight" and module in self.linear:
            return "weight", torch_name, buffer
        if leaf == "bias":
            return "bias", torch_name, buffer
        return None, torch_name, buffer

    def _to_impl(self, torch_name, value, optimizer=False):
        kind, _, buffer = self._kind(torch_name, optimizer)
        if buffer == "step":
            return value
        value = np.asarray(value) * self._factor(buffer)
        if kind == "weight" and value.ndim == 2 and self.conventions.weight_layout == "in_out":
            return np.ascontiguousarray(value.T)
        if kind == "bias" and value.ndim == 1:
            return value.reshape(_bias_shape(self.conventions.bias_shape, value.shape[0]))
        return value

    def _to_torch(self, it, key, name, value):
        """`value` of result[key][name] in torch's layout; ConventionError where its shape fits not."""
        torch_name = self._torch_key(key, name)
        if key in ("deltas", "forward"):
            return value
        kind, param, buffer = self._kind(torch_name, key == "optimizer_state")
        if buffer == "step" or kind is None:
            return value if buffer is None else _scaled(value, self._factor(buffer))
        try:
            a = np.asarray(value)
        except Exception:  # ragged lists: the contract names them
            return value
        if a.dtype.kind not in "iuf":
            return value
        if kind == "weight" and self.conventions.weight_layout == "in_out":
            want = tuple(reversed(self.shapes.get(param, a.shape[::-1])))
            if a.shape != want:
                raise self._misfit(it, key, name, torch_name, a, f"weight_layout 'in_out' expects (fan_in, fan_out) = {want}")
            a = a.T
        elif kind == "bias" and self.conventions.bias_shape != "flat":
            want = _bias_shape(self.conventions.bias_shape, a.size)
            if a.shape != want:
                raise self._misfit(it, key, name, torch_name, a, f"bias_shape {self.conventions.bias_shape!r} "
                                                                 f"expects {_describe(self.conventions.bias_shape)}")
            a = a.reshape(-1)
        return _scaled(a, self._factor(buffer))

    def _factor(self, buffer):
        if buffer is None or buffer == "step":
            return 1.0
        return self.scale.get(buffer, self.scale["*"])

    @staticmethod
    def _misfit(it, key, name, torch_name, a, expects):
        alias = f" ({torch_name})" if torch_name != name else ""
        return ConventionError(f"train_step(x, y) at iteration {it} returned {key}[{name!r}]{alias} with shape "
                               f"{a.shape}; {expects}")


def _scaled(value, factor):
    if factor == 1.0:
        return value
    return np.asarray(value, dtype=np.float64) / factor


def _bias_shape(kind, n):
    return {"flat": (n,), "row": (1, n), "column": (n, 1)}[kind]


def _describe(kind):
    return {"row": "(1, fan_out)", "column": "(fan_out, 1)"}[kind]


def _choice(field, value, allowed):
    if value not in allowed:
        raise ConventionError(f"conventions.{field}: expected one of {', '.join(allowed)}, got {value!r}")


def _linear_modules(network):
    """The modules whose 2-D weight has a layout: every layer of the MLP form, a layer list's Linear."""
    if "layers" in network:
        return {f"layers.{i}" for i, m in enumerate(network["layers"]) if m.get("type") == "Linear"}
    return {f"layers.{k}" for k in range(len(network["sizes"]) - 1)}


def _module_count(network):
    return len(network["layers"]) if "layers" in network else len(network["sizes"]) - 1
