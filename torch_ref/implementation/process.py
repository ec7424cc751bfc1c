"""`--impl "exec:COMMAND ARGS"`: an implementation in any language, in its own process, driven
through the process protocol (docs/protocol.md; the wire format is wire.py's).

The program is started once (COMMAND ARGS split as a POSIX shell splits words, no shell run) and
talks on its stdin and stdout; the lockstep sees it as one more implementation behind the one loop
(`Program` has load_state_dict, train_step, load_optimizer_state), in a `ProcessGuard`:

    init   the parsed description and the initial state        -> ready
    step   the iteration's batch (and dropout masks)           -> result: output, loss, grads,
                                                                  state_dict [, deltas, forward,
                                                                  optimizer_state]
    load   a state and/or optimizer state (resync mode)        -> ready
    close  the end of the run                                  (no answer; the program exits)

Failures, each one line naming the message, the field and the iteration:
  * the program exits (or cannot be written to) before it answers, or does not answer within
    the per-call limit (--step-timeout; it is then killed), or answers "error": the
    implementation failed, stage "exception" (exit 1);
  * it answers garbage (not a message of the protocol), the wrong message, arrays of another
    dtype than the run's or outside the protocol's names: `ProtocolError`; a tensor name unknown to
    the network, one missing or of the wrong shape: the contract's ImplError (contract.py). Both
    mean the contract is broken (exit 2).
Its stderr is passed through line by line, each line marked with `[exec:COMMAND]`. The program is
started with PR_SET_PDEATHSIG (interrupt.die_with_parent): a harness that is killed, even by
SIGKILL, takes it with it; every run, however it ends, closes it (`close`, then a kill).
"""
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from ..errors import ImplError, exception_text
from ..interrupt import Interrupted, die_with_parent
from . import wire
from .plugin import Failed, Guard

CLOSE_WAIT = 2.0  # seconds a program may take to exit after close before it is killed
GROUPS = ("grads", "state_dict", "deltas", "forward", "optimizer_state")  # "group/NAME" arrays of a result


class ProtocolError(ImplError):
    """The program's answer is not what the protocol says (garbage, a wrong message, dtype or array name): exit 2."""


def build(command, desc, timeout=None):
    """The program `command` ("COMMAND ARGS", without the "exec:"), started, in its guard."""
    program = Program(command, desc)
    return ProcessGuard(program, f"exec:{command}", timeout=timeout)


class ProcessGuard(Guard):
    """The guard of a program: the per-call limit is the program's own (select() on its pipes, so
    a hung program is killed, not left behind); its failures and protocol errors pass as they are."""

    def call(self, what, fn, *args, label=None):
        self.impl.timeout = self.timeout
        try:
            return fn(*args)
        except (Interrupted, ImplError, Failed):
            raise
        except BaseException as e:  # an error of ours while talking to it: still its run that failed
            raise Failed(what, f"{label or what} raised {exception_text(e)}", e) from None

    def close(self):
        self.impl.close()


class Program:
    """The program under test, as an implementation: each method one exchange of messages."""

    def __init__(self, command, desc):
        argv = shlex.split(command) if command.strip() else []
        if not argv:
            raise ImplError("exec: expected a command after 'exec:', e.g. exec:./my_mlp or exec:python3 client.py")
        self.name, self.desc = f"exec:{command}", desc
        self.dtype = np.dtype(desc["run"]["dtype"])
        self.timeout, self.it, self.started, self.header = 0, -1, False, None
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0, preexec_fn=die_with_parent)
        except OSError as e:
            raise ImplError(f"{self.name}: cannot start {argv[0]!r} ({e.strerror or e})") from None
        self.stderr = threading.Thread(target=_pass_through, args=(self.proc.stderr, self.name), daemon=True)
        self.stderr.start()

    # --- the implementation's methods ---------------------------------------------------------

    def load_state_dict(self, state):
        """init with the description and this state (the first call), else load (resync)."""
        arrays = [(f"state_dict/{k}", v) for k, v in state.items()]
        if not self.started:
            self.started = True
            self.exchange("init", arrays, "ready", description=self.desc)
        else:
            self.exchange("load", arrays, "ready", iteration=self.it)

    def load_optimizer_state(self, flat):
        self.exchange("load", [(f"optimizer_state/{k}", v) for k, v in flat.items()], "ready", iteration=self.it)

    def train_step(self, x, y, masks=None):
        """step: the batch (and masks/layers.i); the result as the plug-in contract's dict."""
        self.it += 1
        arrays = [("x", x), ("y", y)] + [(f"masks/{k}", v) for k, v in (masks or {}).items()]
        return self.result(self.exchange("step", arrays, "result", iteration=self.it))

    def close(self):
        """close, then wait CLOSE_WAIT s for the program to exit; kill it if it has not."""
        if self.proc.poll() is None:
            try:
                self.send(wire.encode("close"), time.monotonic() + CLOSE_WAIT, "close")
            except (Failed, OSError):
                pass
            try:
                self.proc.wait(CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.stderr.join(1.0)

    # --- one exchange -----------------------------------------------------------------------------

    def exchange(self, message, arrays, answer, **fields):
        """Send `message`, read the answer; its arrays {name: array}, or Failed / ProtocolError."""
        where = _where(message, fields.get("iteration"))
        deadline = time.monotonic() + self.timeout if self.timeout else None
        self.send(wire.encode(message, arrays, **fields), deadline, where)
        prefix = self.read(4, deadline, where)
        try:
            header, specs = wire.parse_header(self.read(wire.header_length(prefix), deadline, where))
        except wire.WireError as e:
            raise ProtocolError(f"{self.name}: the answer to {where}: {e}") from None
        payload = self.read(sum(s[3] for s in specs), deadline, where)
        if header["message"] == "error":
            raise Failed(message, f"{self.name} answered {where} with an error: {_text(header.get('text'))}")
        if header["message"] != answer:
            raise ProtocolError(f"{self.name}: the answer to {where} is {_text(header['message'])}; expected {answer!r}")
        self.header = header  # the last answer's header (scripts/bench.py reads the C client's "seconds")
        return wire.arrays_from(specs, payload), where

    def send(self, data, deadline, where):
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        while view:
            self.wait_for(fd, deadline, where, write=True)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self.ended(where) from None

    def read(self, n, deadline, where):
        fd, out = self.proc.stdout.fileno(), bytearray()
        while len(out) < n:
            self.wait_for(fd, deadline, where)
            chunk = os.read(fd, min(n - len(out), 1 << 22))
            if not chunk:
                raise self.ended(where)
            out += chunk
        return bytes(out)

    def wait_for(self, fd, deadline, where, write=False):
        """Until `fd` is ready; Failed (the program killed) once the deadline has passed."""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.kill()
                raise Failed(where.split()[0], f"{self.name} did not answer {where} within {self.timeout:g} s "
                                               "(the per-call limit, --step-timeout)")
            ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
            if ready[1] or ready[0]:
                return

    def ended(self, where):
        """The Failed of a program that closed its end before answering (it exited, most likely)."""
        try:
            code = self.proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            return Failed(where.split()[0], f"{self.name} closed its stdout before answering {where}")
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
               else f"exited with code {code}")
        return Failed(where.split()[0], f"{self.name} {how} before answering {where}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # --- the answer to step ---------------------------------------------------------------------

    def result(self, answer):
        """The result's arrays as the plug-in contract's dict (contract.py checks the rest)."""
        arrays, where = answer
        out = {}
        for name, a in arrays.items():
            group, sep, tensor = name.partition("/")
            if sep and group in GROUPS and tensor:
                out.setdefault(group, {})[tensor] = self.checked(where, name, a)
            elif name in ("output", "loss"):
                out[name] = self.checked(where, name, a)
            else:
                raise ProtocolError(f"{self.name}: the answer to {where}: array {name!r} is not one of the protocol's "
                                    f"(output, loss, {', '.join(g + '/NAME' for g in GROUPS)})")
        for required in ("output", "loss"):
            if required not in out:
                raise ProtocolError(f"{self.name}: the answer to {where} has no array {required!r}")
        if np.size(out["loss"]) != 1:
            raise ProtocolError(f"{self.name}: the answer to {where}: array 'loss' has shape "
                                f"{list(np.shape(out['loss']))}; expected [] (one number)")
        out["loss"] = float(np.reshape(out["loss"], -1)[0])
        return out

    def checked(self, where, name, a):
        if a.dtype != self.dtype:
            raise ProtocolError(f"{self.name}: the answer to {where}: array {name!r} has dtype {a.dtype}; "
                                f"expected {self.dtype} (the run's dtype)")
        return a


def _where(message, iteration):
    return message if iteration is None or message == "init" else f"{message} at iteration {iteration}"


def _text(value):
    return json.dumps(value)[:200] if not isinstance(value, str) else " ".join(value.split())[:200]


def _pass_through(stream, name):
    """Each line the program writes on its stderr, on ours, marked with its name."""
    try:
        for line in iter(stream.readline, b""):
            sys.stderr.write(f"[{name}] {line.decode('utf-8', 'replace').rstrip()}\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
