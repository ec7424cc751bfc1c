"""The parent of the ranks: starts them (forkserver or spawn), watches their heartbeats, stops them
all when one fails or hangs, blames the rank that stopped answering, and hands back the result."""
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import time

import torch

from ..twin.model import prepare_device
from ..errors import SpecError
from .cases import validate
from .rank import PEER_LOST, PHASES, WAITING, worker


# torch.multiprocessing's start method: "forkserver" (fresh processes forked from a server that has
# imported torch once; not forked from the caller) where the platform has it, else "spawn";
# BACKPROP_CHECK_START_METHOD=spawn chooses spawn
START_METHOD = os.environ.get("BACKPROP_CHECK_START_METHOD") or (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")


DEFAULT_TIMEOUT = 60.0  # seconds a collective may wait for a peer (gloo/nccl), and the watchdog's base


class RankFailure(Exception):
    """A rank raised, died or hung: the run was stopped. `exit_code` 1 (during training) or 2 (set-up)."""

    def __init__(self, message, rank, cause, exit_code):
        super().__init__(message)
        self.rank, self.cause, self.exit_code = rank, cause, exit_code


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cases, ranks, timeout=DEFAULT_TIMEOUT, fault=None, on_start=None, watchdog=None, progress=None):
    """Run every Case on `ranks` spawned processes (one process group, the cases one after the
    other); returns their Results (verdict.Result, with `parallel`). Raises SpecError for a bad set-up (before anything starts)
    and RankFailure when a rank raises, dies, hangs or is stopped (SIGSTOP): the others are then
    stopped, nothing is left running. `timeout` bounds every collective (the backend's timeout)
    and the parent's watchdog, which stops everything when no rank has made progress for
    `watchdog` s (default timeout + 15, and 2 minutes more while the ranks start). `fault` is a
    test hook (rank, iteration, "raise"|"exit"|"hang"|"stop"); `on_start(pids)` is called once
    they run; `progress(it, steps)` (as the lockstep's) with the lowest iteration any rank is at.

    Nothing outlives the calling process, even when it is killed by SIGKILL, which no handler
    sees: every rank asks the kernel (prctl PR_SET_PDEATHSIG, Linux) to SIGKILL it when its
    parent ends, and so does the forkserver, the ranks' parent (torch_ref/distributed/forkserver.py, first
    in its preload list; without it the forkserver stays up as long as the ranks it forked, and
    they as long as it). A death signal, not a pipe watched by a thread, because the kernel
    delivers it whatever the rank is doing: stuck in a collective, holding the GIL, or stopped.
    The death signal fires when the *thread* that started the forkserver (or, with the spawn
    method, the rank) exits: call check() from a thread that outlives the run (the main thread).
    The results come back through a pipe, not a file: there is no temporary directory to leave
    behind. On SIGINT/SIGTERM the caller's exception (torch_ref.interrupt.Interrupted) passes
    through the `finally` below, which stops the ranks."""
    cases = list(cases)
    reductions = [validate(c, ranks) for c in cases]
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise SpecError("--timeout", f"expected a positive number of seconds, got {timeout!r}")
    if cases[0].desc["run"]["device"] == "cuda":
        prepare_device("cuda")  # refuse here, with one line, if there is no GPU or too few
        if torch.cuda.device_count() < ranks:
            raise SpecError("run.device", f"cuda with {ranks} rank(s) needs one GPU per rank, found"
                                          f" {torch.cuda.device_count()}")
    ctx = multiprocessing.get_context(START_METHOD)
    os.environ["BACKPROP_CHECK_PARENT_PID"] = str(os.getpid())  # read by torch_ref/distributed/forkserver.py
    if START_METHOD == "forkserver":  # the server imports torch once; every later launch forks from it
        # torch_ref.distributed.forkserver first: the server dies with this process (see above)
        ctx.set_forkserver_preload(["torch_ref.distributed.forkserver", "torch_ref.distributed", "torch._dynamo"])  # torch.optim imports _dynamo
    shared = ctx.RawArray("d", 3 * ranks)
    results_in, results_out = ctx.Pipe(duplex=False)
    port = free_port()
    steps = cases[0].desc["run"]["steps"] if len(cases) == 1 else None
    pc = torch.multiprocessing.start_processes(
        worker, args=(ranks, cases, reductions, port, timeout, shared, results_out, fault, os.getpid()),
        nprocs=ranks, join=False, start_method=START_METHOD)
    procs = pc.processes
    results_out.close()  # the ranks hold their copies: EOF once they are gone
    try:
        if on_start:
            on_start([p.pid for p in procs])
        watchdog = timeout + 15.0 if watchdog is None else watchdog
        failure, payload = _watch(procs, shared, ranks, watchdog, results_in,
                                  progress and (lambda it: progress(it, steps)))
        if failure is None:
            return pickle.loads(payload)
        snapshot = [(int(shared[3 * r]), int(shared[3 * r + 1])) for r in range(ranks)]
        alive = [p.is_alive() for p in procs]
        stopped = [alive[r] and _is_stopped(p.pid) for r, p in enumerate(procs)]
        _stop(procs, grace=1.0)
        raise _blame(procs, pc.error_files, snapshot, alive, failure, timeout, watchdog, stopped)
    finally:
        _stop(procs, grace=0.0)
        results_in.close()
        for f in pc.error_files:
            with contextlib.suppress(OSError):
                os.unlink(f)


def _is_stopped(pid):
    """Whether process `pid` is stopped (SIGSTOP, SIGTSTP, a debugger): state T or t in /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _watch(procs, shared, ranks, limit, results_in, progress=None):
    """Wait until every rank exited 0 (None), one failed ("exit"), or nothing moved for `limit` s
    ("hang"); returns (that, the bytes rank 0 sent through `results_in`, or None). Reads them as
    they come (rank 0 cannot finish sending a large result before they are read). `progress(it)`
    gets the lowest iteration the ranks are at whenever it changes."""
    start_limit = limit + 120.0  # starting a rank (importing torch) may be slow
    last_ticks, last_change, last_it, payload = None, time.monotonic(), None, None
    while True:
        waiting = [p.sentinel for p in procs] + ([results_in] if payload is None else [])
        if results_in in multiprocessing.connection.wait(waiting, timeout=0.2):
            try:
                payload = results_in.recv_bytes()
            except EOFError:
                payload = b""  # every rank closed its end without sending: they failed or ended
        codes = [p.exitcode for p in procs]
        if any(c not in (None, 0) for c in codes):
            return "exit", None
        if all(c == 0 for c in codes) and payload is not None:
            return None, payload
        ticks = [shared[3 * r + 2] for r in range(ranks)]
        it = min(int(shared[3 * r]) for r in range(ranks))
        if progress is not None and it != last_it and all(ticks):
            progress(last_it := it)
        if ticks != last_ticks:
            last_ticks, last_change = ticks, time.monotonic()
        elif time.monotonic() - last_change > (limit if all(ticks) else start_limit):
            return "hang", None


def _stop(procs, grace):
    """Let the processes end on their own for `grace` s, then SIGTERM, then SIGKILL; reap them all."""
    end = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
    end = time.monotonic() + 3.0
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()


def _blame(procs, error_files, snapshot, alive, failure, timeout, watchdog, stopped=None):
    """The RankFailure naming the rank that caused the stop, and how. In order: a rank that died
    (signal, or exit without a traceback); a rank that was stopped (SIGSTOP: it stopped answering,
    its heartbeat froze, and its peers, waiting for it in a collective, timed out: they lost a
    peer, it is the cause); a rank that raised something other than losing a peer; a rank still
    running outside any collective while the others waited for it (hung); else the first that
    failed. `snapshot[r]` = (iteration, phase), `alive[r]` and `stopped[r]` when the failure was seen."""
    errors = {}
    for r, f in enumerate(error_files):
        if os.access(f, os.R_OK):
            with open(f, "rb") as fh:
                errors[r] = pickle.load(fh)

    def where(r):
        it, phase = snapshot[r]
        return "before training started" if phase <= PHASES["init"] else f"at iteration {it}"

    def last_line(tb, width=200):
        lines = [l.strip() for l in tb.strip().splitlines() if l.strip()]
        line = lines[-1] if lines else "an exception"
        return line if len(line) <= width else line[:width - 3] + "..."

    def others(r):
        return "; ".join(f"rank {o}: {last_line(errors[o], 120) if o in errors else 'stopped'}"
                         for o in range(len(procs)) if o != r)

    def failure_of(r, how, cause, code):
        return RankFailure(f"data-parallel run stopped: rank {r} {how} {where(r)} (pid {procs[r].pid});"
                           f" the other ranks were stopped ({others(r)})", r, cause, code)

    code = lambda r: 2 if snapshot[r][1] <= PHASES["init"] else 1  # before training: a set-up problem
    for r, p in enumerate(procs):
        if r not in errors and p.exitcode not in (0, None) and not alive[r]:  # alive then: stopped by us
            how = (f"was killed by signal {signal.Signals(-p.exitcode).name}" if p.exitcode < 0
                   else f"exited with code {p.exitcode}")
            return failure_of(r, how, how, code(r))
    for r in range(len(procs)):
        if stopped and stopped[r] and r not in errors:
            how = "was stopped (SIGSTOP or similar) and stopped answering"
            return failure_of(r, how, "stopped", code(r))
    for r, tb in errors.items():
        if "SpecError" in tb or not any(s in last_line(tb, 10 ** 6) for s in PEER_LOST):
            err = last_line(tb)
            return failure_of(r, f"raised {err}", err, 2 if "SpecError" in tb else code(r))
    stuck = [r for r in range(len(procs)) if alive[r] and snapshot[r][1] not in WAITING]
    if failure == "hang":  # the watchdog fired: nothing moved, no backend timeout came
        stuck = stuck or [r for r in range(len(procs)) if alive[r]]
        if stuck:
            r = min(stuck, key=lambda r: snapshot[r])
            ranks = ", ".join(map(str, stuck))
            return failure_of(r, f"hung (no rank made progress for {watchdog:g} s; stuck outside any collective:"
                                 f" rank(s) {ranks})", "hung", code(r))
    if stuck:
        how = f"hung (no progress outside any collective while the others waited; timeout {timeout:g} s)"
        return failure_of(stuck[0], how, "hung", code(stuck[0]))
    r = min(errors) if errors else 0
    err = last_line(errors[r]) if r in errors else f"exit code {procs[r].exitcode}"
    return failure_of(r, f"failed: {err}", err, code(r))
