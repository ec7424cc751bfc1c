"""Signals to the `backprop-check` command (torch_ref/interrupt.py, torch_ref/cli/main.py's main,
torch_ref/distributed.py): Ctrl-C and SIGTERM give one line naming the iteration and exit 130 /
143, no traceback, no report touched; SIGTERM or SIGKILL to the parent of a data-parallel run
leaves no rank, no forkserver and no temporary directory behind.

These need real processes (a signal to the interpreter running the command), so each test starts
one; the rank's SIGSTOP is tested with the other rank faults in tests/test_distributed.py.
"""
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from test_distributed import ROOT, WORKED6, _cpu_ticks, _descendants, _exists, _gone, _is_rank

LONG = "10000000"  # --steps: the run is still going when the signal comes
LINE = re.compile(r"^backprop-check: interrupted by (SIGINT|SIGTERM) at iteration (\d+) of " + LONG + "$")


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


def _read_until(fd, proc, pattern, deadline=120):
    """Read the terminal's output until `pattern` appears (or the process ends, or EOF)."""
    text, end = b"", time.monotonic() + deadline
    while pattern not in text and time.monotonic() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            text += chunk
        elif proc.poll() is not None:
            break
    return text


@pytest.mark.parametrize("signum,code", [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
                                         (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_where_exits_128_plus_the_signal_and_leaves_the_report_untouched(
        tmp_path, signum, code):
    """A plain lockstep run, its progress line on a terminal (a pty): once the line shows the
    run going, the signal; then one line naming the iteration, the exit code, no traceback, the
    --report file already there as it was and no temporary file beside it."""
    report = tmp_path / "run.json"
    report.write_text("the previous report\n")
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "torch_ref.cli.main", "run", str(WORKED6), "--steps", LONG, "--report", str(report)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    try:
        shown = _read_until(master, proc, b"lockstep: iteration")
        assert b"lockstep: iteration" in shown, shown
        proc.send_signal(signum)
        proc.wait(timeout=30)
        rest = _read_until(master, proc, b"\0", deadline=10)  # what it wrote after the signal, to EOF
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == code
    lines = [l for l in (shown + rest).decode().replace("\r\n", "\n").split("\n") if l.strip()]
    last = lines[-1].rsplit("\r", 1)[-1].replace("\x1b[K", "")  # after the progress line, cleared
    assert lines[:-1] == [] and LINE.match(last), lines  # one line, no traceback before it
    assert LINE.match(last).group(1) == signal.Signals(signum).name
    assert report.read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
