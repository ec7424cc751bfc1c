"""Ctrl-C (SIGINT) and SIGTERM for the `backprop-check` command, and processes that die with it.

`handled()` (used once, in torch_ref/cli/main.py's main) turns SIGINT and SIGTERM into `Interrupted`,
raised in the main thread wherever the run is. The command then prints one line naming the
iteration the run had reached (`track` records it from the lockstep's `progress(it, steps)`
callback, the data-parallel parent from the ranks' heartbeats) and exits 128 + the signal's
number: 130 for SIGINT, 143 for SIGTERM. No traceback; `finally` blocks run on the way out, so
ranks are stopped and temporary files removed; reports are written only after a complete run,
atomically, so none is half written and one already at the path stays as it was.

`Interrupted` is a BaseException, so `except Exception` (the lockstep's guard around a plug-in's
calls) lets it through, and deliberately NOT a KeyboardInterrupt: a KeyboardInterrupt raised by a
user's plug-in code is that plug-in's failure, a signal sent to the command is not.

`die_with_parent()` is for child processes (the data-parallel ranks, the forkserver): see its
docstring and torch_ref/distributed/forkserver.py.
"""
import contextlib
import ctypes
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_where = {"it": None, "steps": None}  # the iteration the run had reached, as last reported


class Interrupted(BaseException):
    """The command got SIGINT or SIGTERM (`signum`); `iteration`/`steps` where the run was, if known."""

    def __init__(self, signum, iteration=None, steps=None):
        super().__init__(signum, iteration, steps)
        self.signum, self.iteration, self.steps = signum, iteration, steps

    @property
    def exit_code(self):
        """128 + the signal's number, as a shell reports a process ended by it: 130, 143."""
        return 128 + self.signum

    def __str__(self):
        where = "" if self.iteration is None else f" at iteration {self.iteration}"
        of = f" of {self.steps}" if self.iteration is not None and self.steps is not None else ""
        return f"interrupted by {signal.Signals(self.signum).name}{where}{of}"


def note(it, steps=None):
    """Record that the run has reached iteration `it` (0-based, as mismatch reports count) of `steps`."""
    _where["it"], _where["steps"] = it, steps


class track:
    """A progress callback `(it, steps)` that records the iteration (`note`) and passes it on to
    `inner` (a terminal Progress line, or None); `done()` is passed on too."""

    def __init__(self, inner=None):
        self.inner = inner

    def __call__(self, it, steps):
        note(it, steps)
        if self.inner is not None:
            self.inner(it, steps)

    def done(self):
        if self.inner is not None:
            self.inner.done()


@contextlib.contextmanager
def handled():
    """Within: SIGINT and SIGTERM raise Interrupted (once; a second signal while the first is
    being handled, ranks stopped and files removed, is ignored so that the clean-up finishes:
    it is bounded). The previous handlers come back afterwards. Outside the main thread (where
    Python cannot set handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    note(None)
    raised = []

    def handler(signum, frame):
        if raised:
            return
        raised.append(signum)
        raise Interrupted(signum, _where["it"], _where["steps"])

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def die_with_parent(parent=None):
    """Linux: have the kernel SIGKILL this process when its parent ends, even by SIGKILL (which
    no handler can see). prctl(PR_SET_PDEATHSIG) fires when the *thread* that forked this process
    exits. If `parent` (a pid) is given and that process is already gone (it ended before the
    request was made), end now. Returns whether the request was made (False off Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and not _exists(parent):
        os._exit(1)
    return True


def _exists(pid):
    """Whether process `pid` still exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
