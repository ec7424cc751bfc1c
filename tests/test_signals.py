"""Signals to the `backprop-check` command (torch_ref/interrupt.py, torch_ref/cli/main.py's main,
torch_ref/distributed.py): Ctrl-C and SIGTERM give one line naming the iteration and exit 130 /
143, no traceback, no report touched; SIGTERM or SIGKILL to the parent of a data-parallel run
leaves no rank, no forkserver and no temporary directory behind.

One test starts a real process (a data-parallel run, its ranks, a signal to the interpreter running
the command, the exit status a shell sees); the plain run's interruption is tested in this process,
the signal sent by the run itself from its progress callback, at a known iteration (SIGKILL to the
parent of a data-parallel run under -m slow). The rank's SIGSTOP is tested with the other rank
faults in tests/test_distributed.py.
"""
import os
import contextlib
import io
import re
import signal
import subprocess
import sys
import time

import pytest

from torch_ref import interrupt
from torch_ref.cli import main as cli
from test_distributed import ROOT, WORKED6, _cpu_ticks, _descendants, _exists, _gone, _is_rank

LONG = "10000000"  # --steps: the run is still going when the signal comes


def line(steps=LONG):
    """The one line an interrupted run of `steps` iterations prints: (signal, iteration) its groups."""
    return re.compile(r"^backprop-check: interrupted by (SIGINT|SIGTERM) at iteration (\d+) of " + steps + "$")


LINE = line()


def _left_in(tmp, also=()):
    """What the run left in its temporary directory, but torch's compile cache (torchinductor_USER,
    made when torch._dynamo is imported and kept across runs by design) and names starting with `also`."""
    return [p.name for p in tmp.iterdir() if not p.name.startswith(("torchinductor_", *also))]


def _training_ranks(proc, seen, deadline=120):
    """Wait until the 2 ranks of `proc`'s run are past start-up (> 0.25 s of CPU each); every
    process of the run seen so far goes into `seen`. The deadline only bounds a broken start."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        family = _descendants(proc.pid)
        seen.update(family)
        ranks = [p for p in family if _is_rank(p) and not _descendants(p)]  # the forked ranks are leaves
        if len(ranks) >= 2 and all(_cpu_ticks(p) > 25 for p in ranks):
            time.sleep(0.5)  # the parent's watcher reads the ranks' iteration
            seen.update(_descendants(proc.pid))
            return ranks
        time.sleep(0.2)
    pytest.fail("the ranks never started training")


def _start_ranks(tmp_path):
    """`backprop-check run WORKED6 --ranks 2 --steps LONG`, its temporary files in a directory of its own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "torch_ref.cli.main", "run", str(WORKED6), "--ranks", "2", "--steps", LONG]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    return proc, tmp


def test_sigterm_to_the_parent_of_a_data_parallel_run_stops_every_rank_and_removes_its_files(tmp_path):
    """The real process: exit status 143 as a shell sees it, one line naming the iteration, no
    traceback, no rank or forkserver left, no temporary file."""
    proc, tmp = _start_ranks(tmp_path)
    seen = set()
    try:
        _training_ranks(proc, seen)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert LINE.match(err.strip()) and err.count("\n") == 1, err  # one line, the iteration, no traceback
    assert _gone(seen), [p for p in seen if _exists(p)]
    assert _left_in(tmp) == []


@pytest.mark.slow  # the SIGTERM case runs in the default profile
def test_sigkill_to_the_parent_of_a_data_parallel_run_takes_the_ranks_and_the_forkserver_with_it(tmp_path):
    """No handler sees SIGKILL: the ranks and the forkserver must go by themselves (the kernel's
    parent-death signal). The only thing left is Python's own multiprocessing directory (pymp-*,
    the forkserver's socket), which only a process that lives on could remove."""
    proc, tmp = _start_ranks(tmp_path)
    seen = set()
    try:
        ranks = _training_ranks(proc, seen)
        proc.kill()
        proc.wait(timeout=10)
        assert len(seen - {proc.pid}) > len(ranks)  # the forkserver (and the resource tracker) too
        assert _gone(seen), [(p, open(f"/proc/{p}/cmdline", "rb").read()[:100]) for p in seen if _exists(p)]
    finally:
        for p in seen:
            if _exists(p) and p != proc.pid:  # only if the test failed: do not leave them running
                os.kill(p, signal.SIGKILL)
        proc.communicate()
    assert _left_in(tmp, also=("pymp-",)) == []


class _Unhandled(Exception):
    """A signal the command did not handle reached the test's own handler."""


@contextlib.contextmanager
def _unhandled_fails():
    """Within: SIGINT and SIGTERM, should the command not handle them, fail the test (Python's
    defaults would end the test run: KeyboardInterrupt, or the process killed). Yields the handler."""
    def fallback(signum, frame):
        raise _Unhandled(signal.Signals(signum).name)

    previous = {s: signal.signal(s, fallback) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield fallback
    except _Unhandled as e:
        pytest.fail(f"{e} was not handled by the command")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Terminal(io.StringIO):
    """stderr as a terminal: the command shows its progress line on it."""

    def isatty(self):
        return True


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_where_exits_128_plus_the_signal_and_leaves_the_report_untouched(
        tmp_path, monkeypatch, signum, code, capsys):
    """A plain lockstep run, its progress line on a terminal: at iteration AT the signal comes (sent
    to this process by the progress callback, after the line showed the run going); then one line
    naming that iteration, the exit code, no traceback, the --report file already there as it was
    and no temporary file beside it."""
    at, steps = 3, "50"  # (no need to outrun the signal: it comes at a known iteration)
    report = tmp_path / "run.json"
    report.write_text("the previous report\n")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    note = interrupt.note

    def note_then_signal(it, of=None):
        note(it, of)
        if it == at:
            assert "lockstep: iteration 1/" + steps in terminal.getvalue()  # the line showed the run going
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(interrupt, "note", note_then_signal)
    with _unhandled_fails() as fallback:
        assert cli.main(["run", str(WORKED6), "--steps", steps, "--report", str(report)]) == code
        assert signal.getsignal(signum) is fallback  # the command put back the handler it found
    assert capsys.readouterr().out == ""
    lines = [l for l in terminal.getvalue().split("\n") if l.strip()]
    last = lines[-1].rsplit("\r", 1)[-1].replace("\x1b[K", "")  # after the progress line, cleared
    assert len(lines) == 1 and line(steps).match(last), lines  # one line, no traceback before it
    assert line(steps).match(last).groups() == (signal.Signals(signum).name, str(at))
    assert report.read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
