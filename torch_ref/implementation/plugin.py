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
    eval(x) -> (N, fan_out)  optional, a layer list's evaluation pass ([run] eval_every): the
                             output in eval mode on the held-out batch, nothing updated

A network given as a layer list (docs/description.md) has torch's nn.Sequential names
(`layers.0.weight`, `layers.1.running_mean`, ...): x is (N, *network.input_shape); state_dict holds
the buffers too; "deltas" are dE/d(module output) for any subset of the modules, and
"forward": {"layers.{i}": module i's output} is optional (any subset). When the network has
dropout, train_step is called as train_step(x, y, masks={"layers.{i}": bool keep-mask}), the
masks both sides apply (x · mask / (1 − p)); never otherwise, so existing plug-ins are unchanged.

Any real numeric dtype and plain Python lists (or numbers) are accepted and converted to float64;
a missing required key, an unknown or missing tensor name, a wrong shape or a non-numeric value
raises `ImplError` naming it (the command prints one line, exit code 2). An optional key left out
is a stage "not reported": the lockstep shows it so and never counts it as passed.

The lockstep talks to an implementation only through a `Guard` (one place for all of it):

  * snapshots: results are compared a chunk of iterations later (the reference runs ahead), so
    everything the implementation returns is copied when it returns (the Conformer's conversion
    to float64 copies), and everything handed to it (the initial state, the twin's state and
    optimizer state in resync mode, the batches x, y) is its own copy. Numpy code that updates
    in place and returns its live arrays (or views, or the same dict every step), or keeps what
    it was given, is judged on the values of the iteration, as if it copied.
  * failures: any exception raised by the implementation's code, BaseException included
    (SystemExit, KeyboardInterrupt raised by it), ends the run as a failure at stage "exception"
    naming the call and the iteration (exit 1), but for an Exception raised by the factory, which
    refuses the description (ImplError, exit 2); `torch_ref.interrupt.Interrupted` (a real
    SIGINT/SIGTERM, raised by the command's signal handler) is re-raised, never reported as the
    implementation's failure.
  * time: each call (the factory, load_state_dict, train_step, load_optimizer_state, eval) has
    `timeout` seconds (default 300, `--step-timeout`; 0: no limit), enforced with SIGALRM in the
    main thread only (elsewhere nothing is enforced); a call stuck inside one long C function is
    interrupted when that function returns to Python.
  * output: what the implementation prints goes to stderr (the command's stdout carries only its
    own report, one JSON document with --json).

The manual engine (`trusted`) is called without copies, time limit or redirection: its train_step
returns new arrays at every step and never writes to one it handed out (manual/trainer.py; tested
in tests/test_snapshots.py), and it copies what it is given.
"""
import contextlib
import copy
import importlib
import importlib.util
import inspect
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

import manual.trainer

from ..interrupt import Interrupted
from ..errors import ImplError, SpecError, exception_text
from .conventions import ConventionError, declared

DEFAULT_STEP_TIMEOUT = 300.0  # seconds one call of the implementation may take (--step-timeout)


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


def build(target, desc, timeout=None):
    """Load TARGET's factory and call it with (a copy of) the description: the implementation, in
    its `Guard`. A factory that raises an Exception refuses the description: ImplError (exit 2),
    as a TARGET that cannot be loaded. One that exits, raises another BaseException or runs out
    of time has failed: the Guard reports it as the implementation's failure at iteration 0, when
    the lockstep first calls it (exit 1)."""
    factory = load(target) if isinstance(target, str) else target
    guard = Guard(None, _name(target), timeout=timeout)
    try:
        impl = guard.call("factory(desc)", factory, copy.deepcopy(desc), label=f"the factory {_name(target)}")
    except Failed as e:
        if isinstance(e.cause, Exception):
            raise ImplError(e.detail) from None
        guard.failed = e
        return guard
    for method in ("load_state_dict", "train_step"):
        if not callable(getattr(impl, method, None)):
            raise ImplError(f"the factory {_name(target)} returned a {type(impl).__name__} "
                            f"without a {method}() method")
    guard.impl = declared(impl, desc, factory)  # its declared layout and names, converted (conventions.py)
    return guard


def guard(impl, name=None, trusted=False, timeout=None):
    """`impl` in a Guard (itself if it is one already; `timeout`, when given, replaces its own)."""
    if isinstance(impl, Guard):
        if timeout is not None:
            impl.timeout = step_timeout(timeout)
        return impl
    return Guard(impl, name or type(impl).__qualname__, trusted=trusted, timeout=timeout)


def step_timeout(value, field="--step-timeout"):
    """The per-call time limit in seconds: DEFAULT_STEP_TIMEOUT for None, 0 for none at all;
    SpecError naming `field` for a negative or non-finite value."""
    if value is None:
        return DEFAULT_STEP_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds >= 0):
        raise SpecError(field, f"expected a number of seconds >= 0 (0: no limit), got {value!r}")
    return seconds


# --- the guard: the one way the lockstep calls an implementation ----------------------------------

class Failed(Exception):
    """The implementation's own code raised, or a call of it ran out of time: a failure of the
    implementation (stage "exception", exit 1). `call` names the call, `detail` says what happened,
    `cause` is what it raised (None when it ran out of time)."""

    def __init__(self, call, detail, cause=None):
        super().__init__(detail)
        self.call, self.detail, self.cause = call, detail, cause


class _OutOfTime(BaseException):
    """Raised by the SIGALRM handler inside a call that exceeded its time."""


class Guard:
    """An implementation as the lockstep sees it: the same methods, with copies in and out,
    failures turned into `Failed`, a time limit per call and prints sent to stderr (see the module
    docstring). `trusted` (the manual engine): no copies, no time limit, and only an Exception is
    its failure (a KeyboardInterrupt there is the user's Ctrl-C)."""

    def __init__(self, impl, name="implementation", trusted=False, timeout=None):
        self.impl, self.name, self.trusted = impl, name, trusted
        self.timeout = step_timeout(timeout)
        self.failed = None  # a Failed of the factory, raised at the first call

    def load_state_dict(self, state, during=""):
        if self.failed is not None:
            raise self.failed
        state = state if self.trusted else _copied(state)
        return self.call("load_state_dict(state)", self.impl.load_state_dict, state, label=_label("load_state_dict(state)", during))

    def train_step(self, x, y, masks=None):
        """The implementation's train_step(x, y), or train_step(x, y, masks=...) when masks are
        handed (a network with dropout)."""
        if self.failed is not None:
            raise self.failed
        if not self.trusted:  # its own batch: changing it in place cannot reach the twin
            x, y = np.array(x, copy=True), np.array(y, copy=True)
            masks = None if masks is None else _copied(masks)
        if masks is None:
            return self.call("train_step(x, y)", self.impl.train_step, x, y)
        return self.call("train_step(x, y, masks)", lambda *a: self.impl.train_step(*a, masks=masks), x, y)

    @property
    def evaluates(self):
        """True when the implementation has eval(x) -> output, the evaluation pass ([run]
        eval_every). A method that cannot take one argument (torch.nn.Module's eval(), which only
        sets the mode) is not one: the stage is then not reported."""
        method = getattr(self.impl, "eval", None)
        if not callable(method):
            return False
        try:
            inspect.signature(method).bind(None)
        except (TypeError, ValueError):
            return False
        return True

    def eval(self, x):
        """The implementation's eval(x): its output in eval mode on the held-out batch x (its own copy)."""
        if self.failed is not None:
            raise self.failed
        if not self.trusted:
            x = np.array(x, copy=True)
        return self.call("eval(x)", self.impl.eval, x)

    @property
    def loads_optimizer_state(self):
        """True when the implementation can restart from the twin's optimizer state (resync)."""
        return callable(getattr(self.impl, "load_optimizer_state", None))

    def load_optimizer_state(self, flat, during=""):
        """The twin's optimizer state, if the implementation has a load_optimizer_state (else nothing)."""
        if not self.loads_optimizer_state:
            return None
        load = self.impl.load_optimizer_state
        flat = flat if self.trusted else _copied(flat)
        return self.call("load_optimizer_state(state)", load, flat, label=_label("load_optimizer_state(state)", during))

    def call(self, what, fn, *args, label=None):
        """fn(*args), its failure raised as Failed(what, "LABEL raised ...")."""
        label = label or what
        if self.trusted:
            try:
                return fn(*args)
            except Exception as e:
                raise Failed(what, f"{label} raised {exception_text(e)}", e) from None
        try:
            with _deadline(self.timeout), contextlib.redirect_stdout(sys.stderr):
                return fn(*args)
        except (Interrupted, ConventionError):  # a declared convention that cannot apply: bad input
            raise
        except _OutOfTime:
            raise Failed(what, f"{label} did not return within {self.timeout:g} s "
                               "(the per-call limit, --step-timeout)") from None
        except BaseException as e:  # SystemExit and KeyboardInterrupt of its own making included
            raise Failed(what, f"{label} raised {exception_text(e)}", e) from None


def _label(what, during):
    return f"{what} ({during})" if during else what


def _copied(tensors):
    """A dict of new arrays with the same values: the implementation may keep and change them."""
    return {k: v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v) for k, v in tensors.items()}


@contextlib.contextmanager
def _deadline(seconds):
    """Raise _OutOfTime in the enclosed code after `seconds` (0: never), through SIGALRM, in the
    main thread only (signals reach no other thread: elsewhere nothing is enforced). The previous
    SIGALRM handler and any timer already running (less the time spent here) are restored."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    armed = [True]

    def out_of_time(signum, frame):
        if armed[0]:  # not once the call has returned and the cleanup below has begun
            raise _OutOfTime()

    previous = signal.signal(signal.SIGALRM, out_of_time)
    start = time.monotonic()
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        if previous is not None:  # None: a handler not set from Python, left as it was
            signal.signal(signal.SIGALRM, previous)
        if old_delay > 0:
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - start), 1e-6), old_interval)


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
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except Interrupted:
        del sys.modules[name]
        raise
    except BaseException as e:  # SystemExit at import included: never a silent exit 0
        del sys.modules[name]
        raise ImplError(f"importing {str(path)!r} raised {exception_text(e)}") from None
    return module


def _import_module(name):
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return importlib.import_module(name)
    except Interrupted:
        raise
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ImplError(f"no module named {e.name!r}") from None
        raise ImplError(f"importing {name!r} raised {exception_text(e)}") from None
    except BaseException as e:
        raise ImplError(f"importing {name!r} raised {exception_text(e)}") from None


def _name(target):
    return repr(target) if isinstance(target, str) else getattr(target, "__qualname__", repr(target))


def guarded(desc, impl, impl_name, step_timeout=None):
    """The implementation in its guard (torch_ref/implementation/plugin.py); the manual engine, trusted, for None."""
    if impl is None:
        return Guard(manual.trainer.build(desc), "manual", trusted=True)
    return guard(declared(impl, desc), impl_name, timeout=step_timeout)
