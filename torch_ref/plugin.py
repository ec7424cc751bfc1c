"""Plug-in implementations: load one from `--impl TARGET`, and hold what it returns to the contract.

TARGET is `package.module:factory` or `path/to/file.py:factory`. The factory is called with the
parsed description (a dict) and returns an object with

    load_state_dict(state)   state: {"layers.{k}.weight": (fan_out, fan_in), "layers.{k}.bias": (fan_out,) or ()}
    train_step(x, y) -> {    x: (N, fan_in) numpy array of the run's dtype; y: the targets as the
                             description gives them, (N, fan_out), or (N,) class indices (int64)
        "output": (N, fan_out), "loss": float,        required, forward pass before the update
        "grads": {name: array},                       required, before the update
        "state_dict": {name: array},                  required, after the update
        "deltas": {"layers.{k}": (N, fan_out)},       optional, dE/dnet_k before the update
        "optimizer_state": {name: array},             optional, after the update
    }

Any real numeric dtype and plain Python lists (or numbers) are accepted and converted to float64;
a missing required key, an unknown or missing tensor name, a wrong shape or a non-numeric value
raises `ImplError` naming it (the command prints one line, exit code 2). An optional key left out
is a stage "not reported": the lockstep shows it so and never counts it as passed.
"""
import copy
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from .spec import SpecError

REQUIRED = ("output", "loss", "grads", "state_dict")
OPTIONAL = ("deltas", "optimizer_state")
# the stage each optional key feeds, for "not reported"
OPTIONAL_STAGE = {"deltas": "delta", "optimizer_state": "optim"}


class ImplError(SpecError):
    """An implementation that cannot be loaded, or whose train_step breaks the contract (exit 2)."""

    def __init__(self, message):
        super().__init__("--impl", message)


def load(target):
    """The factory named by TARGET (`package.module:factory` or `path/to/file.py:factory`)."""
    module_part, sep, attr = str(target).rpartition(":")
    if not sep or not module_part or not attr:
        raise ImplError(f"expected package.module:factory or path/to/file.py:factory, got {target!r}")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        module = _import_file(Path(module_part))
    else:
        module = _import_module(module_part)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImplError(f"{module_part!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImplError(f"{target!r} is not callable (a {type(obj).__name__})")
    return obj


def build(target, desc):
    """Load TARGET's factory and call it with (a copy of) the description: the implementation."""
    factory = load(target) if isinstance(target, str) else target
    try:
        impl = factory(copy.deepcopy(desc))
    except Exception as e:  # the user's code: one line, never its traceback
        raise ImplError(f"the factory {_name(target)} raised {one_line(e)}") from None
    for method in ("load_state_dict", "train_step"):
        if not callable(getattr(impl, method, None)):
            raise ImplError(f"the factory {_name(target)} returned a {type(impl).__name__} "
                            f"without a {method}() method")
    return impl


def _import_file(path):
    if not path.is_file():
        raise ImplError(f"no such file: {str(path)!r}")
    name = f"_backprop_check_impl_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:  # imported once per process, as `import` does
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImplError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # its sibling modules import, as under `python path/to/file.py`
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ImplError(f"importing {str(path)!r} raised {one_line(e)}") from None
    return module


def _import_module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ImplError(f"no module named {e.name!r}") from None
        raise ImplError(f"importing {name!r} raised {one_line(e)}") from None
    except Exception as e:
        raise ImplError(f"importing {name!r} raised {one_line(e)}") from None


def _name(target):
    return repr(target) if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


def one_line(e):
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- the contract of train_step's result --------------------------------------------------------

class Conformer:
    """Checks and converts each train_step result against the reference's (the twin's) result.

    The first result is checked in full (every key, name, dtype and shape, with a message naming
    the culprit); later results take a fast path that only confirms every value is already a float
    array of the reference's shape, and fall back to the full check otherwise. `trusted` (the
    manual engine) skips both.
    """

    def __init__(self, trusted=False):
        self.trusted = trusted
        self.reported = None  # the optional keys the implementation gives, fixed at iteration 0

    def not_reported(self, reference):
        """The stages the implementation does not report, of those the reference has."""
        if self.reported is None:
            return []
        return [OPTIONAL_STAGE[k] for k in OPTIONAL
                if k in reference and len(reference[k]) and k not in self.reported]

    def __call__(self, it, result, reference):
        """`result`, converted (float64 arrays, loss a float), or ImplError naming what is wrong."""
        if self.trusted:
            if self.reported is None:
                self.reported = {k for k in OPTIONAL if k in result}
            return result
        if self.reported is not None and self._fast_ok(result, reference):
            return result
        return self._full(it, result, reference)

    def _keys(self, reference):
        """(key, reference value) for each tensor-valued key this implementation must give."""
        for key in ("output", "grads", "state_dict") + OPTIONAL:
            if key in reference and (key not in OPTIONAL or key in self.reported):
                yield key, reference[key]

    def _fast_ok(self, result, reference):
        if type(result) is not dict or type(result.get("loss")) is not float:
            return False
        for key in OPTIONAL:  # an optional key that appears later than iteration 0: the full check says so
            if key in reference and key not in self.reported and result.get(key) is not None:
                return False
        for key, ref in self._keys(reference):
            value = result.get(key)
            if type(ref) is not dict:
                if not _float_array(value, ref.shape):
                    return False
                continue
            if type(value) is not dict or len(value) != len(ref):
                return False
            for name, r in ref.items():
                if not _float_array(value.get(name), np.shape(r)):
                    return False
        return True

    def _full(self, it, result, reference):
        where = f"train_step(x, y) at iteration {it}"
        if not isinstance(result, dict):
            raise ImplError(f"{where} returned a {type(result).__name__}; expected a dict with keys "
                            f"{list(REQUIRED)} (and optionally {list(OPTIONAL)})")
        for key in REQUIRED:
            if key not in result:
                raise ImplError(f"{where} returned no {key!r} (required keys: {list(REQUIRED)})")
        reported = {k for k in OPTIONAL if result.get(k) is not None and k in reference}
        if self.reported is None:
            self.reported = reported
        elif reported != self.reported:
            raise ImplError(f"{where} reports {sorted(reported) or 'none'} of the optional keys "
                            f"{list(OPTIONAL)}; at iteration 0 it reported "
                            f"{sorted(self.reported) or 'none'}: report the same at every iteration")
        out = {k: v for k, v in result.items() if k not in OPTIONAL or k in reported}
        out["loss"] = float(_array(result["loss"], None, f"{where} returned 'loss'").reshape(-1)[0])
        for key, ref in self._keys(reference):
            value = result[key]
            if not isinstance(ref, dict):
                out[key] = _array(value, np.shape(ref), f"{where} returned {key!r}", "(N, fan_out)")
                continue
            if not isinstance(value, dict):
                raise ImplError(f"{where} returned {key!r} as a {type(value).__name__}; "
                                f"expected a dict {{name: array}} with {sorted(ref)}")
            for name in value:
                if name not in ref:
                    raise ImplError(f"{where} returned {key}[{name!r}], not a tensor of this network "
                                    f"(expected {sorted(ref)})")
            converted = {}
            for name, r in ref.items():
                if name not in value:
                    raise ImplError(f"{where} returned no {key}[{name!r}] (expected {sorted(ref)})")
                converted[name] = _array(value[name], np.shape(r), f"{where} returned {key}[{name!r}]")
            out[key] = converted
        return out


def _float_array(v, shape):
    return type(v) is np.ndarray and v.dtype.kind == "f" and v.shape == shape


def _array(value, shape, what, expected=""):
    """`value` as a float64 array of `shape` (any size-1 value when shape is None), or ImplError."""
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise ImplError(f"{what} that is not an array ({one_line(e)})") from None
    if a.dtype.kind not in "iuf" or a.dtype == object:
        raise ImplError(f"{what} of dtype {a.dtype} ({_short(value)}); expected real numbers")
    if shape is None:
        if a.size != 1:
            raise ImplError(f"{what} with shape {a.shape}; expected a single number")
    elif a.shape != shape:
        raise ImplError(f"{what} with shape {a.shape}; expected {shape} {expected}".rstrip())
    return a.astype(np.float64, copy=False)


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
