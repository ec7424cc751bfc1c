"""The contract of an implementation's train_step result: every required key, tensor name, dtype
and shape checked against the reference's result (the first in full, later ones by a fast path),
values converted to float64 copies taken at return time (an implementation that updates in place
or hands out its live arrays is judged on what it returned), optional keys fixed at iteration 0.

Three required keys may be given as NOT_EXPOSED: "output", "loss", "grads" of code that does not
expose them (the own-loop adapters, own_loop.py); their stage is then "not reported", never passed. The
deltas may be any subset of the layers; an optimizer_state "{param}.step" entry may be left out
(code that keeps no count): it is the reference's count, which is no computed value."""
import numpy as np

from ..errors import ImplError, exception_text

REQUIRED = ("output", "loss", "grads", "state_dict")
# states, grad_states: the recurrent modules' per-time-step states and their gradients
# ({"layers.1.h": (L, D, T, N, H)}, torch_ref/lockstep/states.py): compared where given
OPTIONAL = ("deltas", "optimizer_state", "forward", "states", "grad_states")
# the stage each optional key feeds, for "not reported" (the states are part of a stage, not one)
OPTIONAL_STAGE = {"deltas": "delta", "optimizer_state": "optim", "forward": "forward"}
# required keys that may be NOT_EXPOSED (code that does not expose them): their stage is not reported
NULLABLE = ("output", "loss", "grads")
NULLABLE_STAGE = {"output": "output", "loss": "loss", "grads": "grad"}
# optional keys of which a layer list's implementation may report any subset of the modules
SUBSETS = ("deltas", "forward", "states", "grad_states")


class NotExposed:
    """The value of "output", "loss" or "grads" that the implementation's code does not expose
    (NOT_EXPOSED, its one instance): the stage is "not reported", fixed at iteration 0."""

    def __repr__(self):
        return "NOT_EXPOSED"


NOT_EXPOSED = NotExposed()


class Unchecked:
    """What train_step returns for an iteration it gives no results for (UNCHECKED, its one
    instance; a partial trace, torch_ref/traces/): nothing is compared at that iteration, and the
    reference keeps its own trajectory (lockstep/loop.py)."""

    def __repr__(self):
        return "UNCHECKED"


UNCHECKED = Unchecked()


class Conformer:
    """Checks and converts each train_step result against the reference's (the twin's) result.

    The first result is checked in full (every key, name, dtype and shape, with a message naming
    the culprit); later results take a fast path that only confirms every value is already a float
    array of the reference's shape, and fall back to the full check otherwise. Both return new
    float64 arrays (a snapshot: the implementation may change its own in place at the next step,
    before this one is compared). `trusted` (the manual engine, whose results are new arrays
    already) skips all of it.
    """

    def __init__(self, trusted=False):
        self.trusted = trusted
        self.reported = None  # the optional keys the implementation gives, fixed at iteration 0

    def not_reported(self, reference):
        """The stages the implementation does not report, of those the reference has."""
        if self.reported is None:
            return []
        absent = [NULLABLE_STAGE[k] for k in NULLABLE if k not in self.reported]
        return absent + [OPTIONAL_STAGE[k] for k in OPTIONAL_STAGE
                         if k in reference and len(reference[k]) and k not in self.reported]

    def __call__(self, it, result, reference):
        """`result`, converted (float64 arrays, loss a float), or ImplError naming what is wrong."""
        if self.trusted:
            if self.reported is None:
                self.reported = {k for k in NULLABLE + OPTIONAL if k in result}
            return result
        result = _with_steps(result, reference)
        if self.reported is not None and self._fast_ok(result, reference):
            return self._snapshot(result, reference)
        return self._full(it, result, reference)

    def _snapshot(self, result, reference):
        """The compared values of a result that passed the fast check, as new float64 arrays."""
        out = {"loss": result["loss"]} if "loss" in self.reported else {}
        for key, ref in self._keys(reference):
            value = result[key]
            out[key] = (np.array(value, dtype=np.float64) if type(ref) is not dict
                        else {name: np.array(value[name], dtype=np.float64) for name in ref if name in value})
        return out

    def _keys(self, reference):
        """(key, reference value) for each tensor-valued key this implementation must give."""
        for key in ("output", "grads", "state_dict") + OPTIONAL:
            if key in reference and (key == "state_dict" or key in self.reported):
                yield key, reference[key]

    def _fast_ok(self, result, reference):
        if type(result) is not dict or ("loss" in self.reported and type(result.get("loss")) is not float):
            return False
        for key in NULLABLE:
            if key not in self.reported and result.get(key) is not NOT_EXPOSED:
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
        reported = ({k for k in NULLABLE if result[k] is not NOT_EXPOSED}
                    | {k for k in OPTIONAL if result.get(k) is not None and k in reference})
        if self.reported is None:
            self.reported = reported
        elif reported != self.reported:
            raise ImplError(f"{where} reports {_shown(reported)} of the optional keys "
                            f"{list(OPTIONAL)}; at iteration 0 it reported "
                            f"{_shown(self.reported)}: report the same at every iteration")
        out = {k: v for k, v in result.items() if k not in NULLABLE + OPTIONAL or k in reported}
        if "loss" in reported:
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
            subset = key in SUBSETS and ("buffers" in reference or key == "deltas")  # (buffers: a layer list's)
            for name, r in ref.items():
                if subset and name not in value:
                    continue
                if name not in value:
                    raise ImplError(f"{where} returned no {key}[{name!r}] (expected {sorted(ref)})")
                converted[name] = _array(value[name], np.shape(r), f"{where} returned {key}[{name!r}]")
            out[key] = converted
        return out


def _shown(reported):
    """The optional keys reported, and any required one NOT_EXPOSED, for a message."""
    shown = sorted(k for k in reported if k in OPTIONAL) + [f"{k}=NOT_EXPOSED" for k in NULLABLE if k not in reported]
    return shown or "none"


def _with_steps(result, reference):
    """`result` with the reference's "{param}.step" entries where its optimizer_state leaves them out."""
    given, ref = (result.get("optimizer_state") if type(result) is dict else None), reference.get("optimizer_state")
    if type(given) is not dict or not ref:
        return result
    missing = [name for name in ref if name.endswith(".step") and name not in given]
    if not missing:
        return result
    return {**result, "optimizer_state": {**given, **{name: ref[name] for name in missing}}}


def eval_output(it, value, reference):
    """An implementation's eval(x) result as a float64 copy of the reference's shape, or ImplError."""
    return _array(value, np.shape(reference), f"eval(x) at iteration {it} returned", "(N, fan_out)")


def _float_array(v, shape):
    return type(v) is np.ndarray and v.dtype.kind == "f" and v.shape == shape


def _array(value, shape, what, expected=""):
    """`value` as a float64 array of `shape` (any size-1 value when shape is None), or ImplError."""
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise ImplError(f"{what} that is not an array ({exception_text(e)})") from None
    if a.dtype.kind not in "iuf" or a.dtype == object:
        raise ImplError(f"{what} of dtype {a.dtype} ({_short(value)}); expected real numbers")
    if shape is None:
        if a.size != 1:
            raise ImplError(f"{what} with shape {a.shape}; expected a single number")
    elif a.shape != shape:
        raise ImplError(f"{what} with shape {a.shape}; expected {shape} {expected}".rstrip())
    return np.array(a, dtype=np.float64)  # a copy, always: the implementation's own array may change


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
