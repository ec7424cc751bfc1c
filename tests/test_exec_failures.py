"""--impl "exec:...": every way a program can fail the process protocol ends the run with one line
naming the message, the field and the iteration; the program never outlives the run.

Crashes and hangs are the implementation's failure (stage "exception", exit 1); garbage, a wrong
message, dtype, name or shape break the contract (exit 2). The program is
tests/exec_programs/misbehaves.py: the manual engine, correct until step 2.

What needs a real process (an exit code, a signal, a hang killed, a program that must not outlive
the run, its stderr) runs the program as one; the rest of the broken contracts (bytes on a stream)
are served by the same program's main() from a thread of this process, over real pipes
(`in_process`): the harness reads them exactly as it reads a program's, and no interpreter starts."""
import functools
import importlib.util
import os
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from torch_ref.cli import main as cli
from torch_ref.implementation import process

from conftest import SPECS

WORKED = str(SPECS / "worked_example.toml")
PROGRAM = Path(__file__).resolve().parent / "exec_programs" / "misbehaves.py"


@functools.cache
def misbehaves():
    """The program as a module (its main() served in-process by `in_process`)."""
    found = importlib.util.spec_from_file_location("misbehaves", PROGRAM)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def command(mode, pidfile, at=2):
    return f"exec:{shlex.quote(sys.executable)} {shlex.quote(str(PROGRAM))} {mode} {at} {shlex.quote(str(pidfile))}"


def gone(pid):
    """Whether process `pid` has ended (or is a zombie no one waits for)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class _Served:
    """What process.Program uses of subprocess.Popen, for `misbehaves.py MODE AT PIDFILE`: its main()
    in a thread of this process, on pipes (stdin, stdout, stderr) as a program's would be."""

    def __init__(self, argv, **popen):
        mode, at, pidfile = argv[-3:]
        ends = [os.pipe() for _ in range(3)]  # (read, write) of stdin, stdout, stderr
        self.stdin = os.fdopen(ends[0][1], "wb", buffering=0)
        self.stdout = os.fdopen(ends[1][0], "rb", buffering=0)
        self.stderr = os.fdopen(ends[2][0], "rb", buffering=0)
        theirs = [os.fdopen(ends[0][0], "rb"), os.fdopen(ends[1][1], "wb"), os.fdopen(ends[2][1], "w")]
        self.pid, self.returncode = os.getpid(), None

        def run():
            try:
                self.returncode = misbehaves().main(mode, int(at), pidfile, *theirs)
            finally:
                for stream in theirs:
                    stream.close()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def poll(self):
        return None if self.thread.is_alive() else self.returncode

    def wait(self, timeout=None):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise subprocess.TimeoutExpired("misbehaves.py", timeout)
        return self.returncode

    def kill(self):  # its stdin closed: main() reads the end and returns
        self.stdin.close()


@pytest.fixture
def in_process(monkeypatch):
    """exec: programs served from a thread (`_Served`) for this test: it returns whether each ended."""
    served = []

    def popen(argv, **kwargs):
        served.append(_Served(argv, **kwargs))
        return served[-1]
    monkeypatch.setattr(process, "subprocess", types.SimpleNamespace(
        Popen=popen, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired))
    yield lambda: [s.poll() is not None for s in served]


# (mode, extra flags, the end of the one line): the implementation failed, exit 1, at iteration 2
FAILED = [
    ("exit", [], "exited with code 3 before answering step at iteration 2"),
    ("segv", [], "was killed by SIGKILL before answering step at iteration 2"),
    ("hang", ["--step-timeout", "0.5"],
     "did not answer step at iteration 2 within 0.5 s (the per-call limit, --step-timeout)"),
    ("error", [], "answered step at iteration 2 with an error: ZeroDivisionError: in my backward"),
    ("truncated", [], "exited with code 0 before answering step at iteration 2"),
]


@pytest.mark.parametrize("mode,flags,detail", FAILED, ids=[f[0] for f in FAILED])
def test_a_program_that_crashes_hangs_or_errs_fails_at_its_iteration(tmp_path, capsys, mode, flags, detail):
    pidfile = tmp_path / "pid"
    impl = command(mode, pidfile)
    assert cli.main(["run", WORKED, "--steps", "5", "--impl", impl, *flags]) == 1
    out = capsys.readouterr().out
    name = impl[len("exec:"):]
    assert f"the implementation failed at iteration 2: exec:{name} {detail}" in out
    assert "checked in lockstep" in out and out.startswith("FAIL: 2 iteration(s)")
    assert gone(int(pidfile.read_text()))  # a hung program is killed, not left behind


# (mode, the end of the one line on stderr): the contract is broken, exit 2
BROKEN = [
    ("garbage", "the answer to step at iteration 2: a length prefix b'Trac' "
                f"({struct.unpack('<I', b'Trac')[0]} bytes, over 16777216): not a message of this protocol"),
    ("not_json", "the answer to step at iteration 2: a header that is not JSON (b'hello': "
                 "Expecting value: line 1 column 1 (char 0))"),
    ("wrong_message", "the answer to step at iteration 2 is ready; expected 'result'"),
    ("float32", "the answer to step at iteration 2: array 'output' has dtype float32; expected float64 (the run's dtype)"),
    ("no_output", "the answer to step at iteration 2 has no array 'output'"),
    ("stray_array", "the answer to step at iteration 2: array 'gradients/layers.0.weight' is not one of the "
                    "protocol's (output, loss, grads/NAME, state_dict/NAME, deltas/NAME, forward/NAME, "
                    "optimizer_state/NAME)"),
]


def test_a_program_that_answers_garbage_breaks_the_contract_and_is_ended(tmp_path, capsys):
    """The real process, once: garbage instead of an answer, one line, exit 2, the program ended."""
    mode, detail = BROKEN[0]
    pidfile = tmp_path / "pid"
    impl = command(mode, pidfile)
    assert cli.main(["run", WORKED, "--steps", "5", "--impl", impl]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith("[exec:")]
    assert out == "" and lines == [f"backprop-check: error: --impl: {impl}: {detail}"]
    assert gone(int(pidfile.read_text()))


@pytest.mark.parametrize("mode,detail", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_program_that_answers_garbage_breaks_the_contract(tmp_path, capsys, mode, detail, in_process):
    impl = command(mode, tmp_path / "pid")
    assert cli.main(["run", WORKED, "--steps", "5", "--impl", impl]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith("[exec:")]
    assert out == "" and lines == [f"backprop-check: error: --impl: {impl}: {detail}"]
    assert in_process() == [True]  # served, then ended by the harness


@pytest.mark.parametrize("mode,detail", [
    ("unknown_name", "train_step(x, y) at iteration 2 returned grads['layers.9.weight'], not a tensor of this network"),
    ("transposed", "train_step(x, y) at iteration 2 returned grads['layers.0.weight'] with shape (2, 2)"),
])
def test_wrong_names_and_shapes_are_the_contracts_errors(tmp_path, capsys, mode, detail, in_process):
    """Names and shapes are checked by the same contract as an in-process plug-in's (contract.py)."""
    impl = command(mode, tmp_path / "pid")
    spec = tmp_path / "wide.toml"
    spec.write_text((SPECS / "worked_example.toml").read_text()
                    .replace("sizes = [2, 2, 2]", "sizes = [2, 3, 2]")
                    .replace("weights = [[[0.15, 0.20], [0.25, 0.30]], [[0.40, 0.45], [0.50, 0.55]]]",
                             "seed = 1").replace("biases = [0.35, 0.60]", ""))
    if mode == "transposed":
        detail = detail.replace("(2, 2)", "(2, 3); expected (3, 2)")
    assert cli.main(["run", str(spec), "--steps", "5", "--impl", impl]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[exec:")]
    assert len(err) == 1 and err[0].startswith(f"backprop-check: error: --impl: {detail}")
    assert in_process() == [True]


@pytest.mark.parametrize("impl,detail", [
    ("exec:", "exec: expected a command after 'exec:'"),
    ("exec:/no/such/program --flag", "exec:/no/such/program --flag: cannot start '/no/such/program' "
                                     "(No such file or directory)"),
])
def test_a_program_that_cannot_start_is_refused(capsys, impl, detail):
    assert cli.main(["run", WORKED, "--impl", impl]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().startswith(f"backprop-check: error: --impl: {detail}")


def test_the_programs_stderr_is_passed_through_marked_with_its_name(tmp_path, capfd):
    impl = command("none", tmp_path / "pid", at=-1)
    assert cli.main(["run", WORKED, "--steps", "3", "--impl", impl, "--json"]) == 0
    out, err = capfd.readouterr()
    assert f"[{impl}] started in mode none" in err and "started" not in out
    assert gone(int((tmp_path / "pid").read_text()))  # closed at the end of a passing run too


def test_a_killed_harness_takes_the_program_with_it(tmp_path):
    """SIGKILL (no handler can run) of the command while its program hangs: the program ends too."""
    pidfile = tmp_path / "pid"
    harness = subprocess.Popen([sys.executable, "-m", "torch_ref", "run", WORKED, "--steps", "5",
                                "--impl", command("hang", pidfile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait()
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid)
    finally:
        harness.kill()
