"""What one rank does: its heartbeat, DDP's forward and backward on its shards (_Shards), and its
part in the lockstep: rank 0 runs the lockstep loop (torch_ref/lockstep/loop.py) with the manual engine
against DDPReference, which gathers every rank's results, judged by DataParallelRule (rule.py);
the other ranks follow (step, send, until rank 0 says stop)."""
import contextlib
import datetime
import os
import pickle
import signal
import time

import numpy as np
import torch
import torch.distributed as dist

import manual.data
import manual.init

from ..implementation import plugin
from ..interrupt import die_with_parent
from ..lockstep.checker import History
from ..lockstep.loop import Loop
from ..lockstep.verdict import DataParallel, Result
from ..twin.model import prepare_device
from ..twin.model import Twin
from ..errors import SpecError
from ..testing import tolerance
from .cases import batch_reduction, loss_factor, scaling_note, shards
from .rule import DataParallelRule


# where a rank is: "ddp" is DDP's forward/backward, which may wait in DDP's own collectives
PHASES = {"start": 0, "init": 1, "compute": 2, "ddp": 3, "collective": 4, "done": 5}


WAITING = (PHASES["init"], PHASES["ddp"], PHASES["collective"], PHASES["done"])  # may wait for a peer


# what a rank's error says when it only lost a peer (gloo/nccl transport errors, timeouts)
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe",
             "DistBackendError", "DistNetworkError", "ProcessGroup", "NCCL error")


class _Heartbeat:
    """This rank's iteration and phase, in memory the parent's watchdog reads (absent under torchrun)."""

    def __init__(self, shared, rank):
        self.shared, self.rank = shared, rank

    def __call__(self, phase, it=None):
        if self.shared is not None:
            if it is not None:
                self.shared[3 * self.rank] = it
            self.shared[3 * self.rank + 1] = PHASES[phase]
            self.shared[3 * self.rank + 2] += 1  # a tick: something happened


def _inject(fault, rank, it, phase="compute"):
    """Test hook: make this rank fail on purpose at iteration `it` ("raise", "exit", "hang" or
    "stop": SIGSTOP to itself, a process that stops answering without dying, in DDP's
    forward/backward, where its heartbeat says it may be waiting for a peer just as theirs do).
    `fault` = (rank, iteration, kind); rank None: every rank."""
    if fault and fault[0] in (rank, None) and fault[1] == it and (fault[2] == "stop") == (phase == "ddp"):
        kind = fault[2]
        if kind == "raise":
            raise RuntimeError(f"fault injected on purpose at iteration {it}")
        if kind == "exit":
            os._exit(3)
        if kind == "hang":
            while True:
                time.sleep(1)
        if kind == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)


class _Shards:
    """This rank's side of the data-parallel step: the twin wrapped in DistributedDataParallel,
    trained on this rank's shards of every batch (K micro-batches, no_sync() on all but the last,
    then one optimizer step). step() returns this rank's view of the iteration (rule.py says what
    a view holds), float64 numpy arrays, copies."""

    def __init__(self, case, rank, world, device, state, reduction, beat, fault):
        self.case, self.rank, self.world, self.device = case, rank, world, device
        self.reduction, self.beat, self.fault = reduction, beat, fault
        self.twin = twin = Twin(case.desc, state, device=device)
        left_out = [twin.params[n] for n in case.setup.left_out]
        for p in left_out:  # frozen while DDP builds its buckets, trained afterwards: the mistake
            p.requires_grad_(False)
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            twin.model, device_ids=[device] if device.type == "cuda" else None)
        for p in left_out:
            p.requires_grad_(True)

    def step(self, it, x, y):
        """One training step of every rank, this rank's part: (the shards' plan, this rank's view)."""
        beat, twin, model, setup = self.beat, self.twin, self.twin.model, self.case.setup
        R, K, rank = self.world, self.case.accumulate, self.rank
        beat("compute", it)
        _inject(self.fault, rank, it)
        N = len(x)
        plan = shards(N, R, K)
        f64 = {"dtype": torch.float64, "device": self.device}
        twin.optimizer.zero_grad(set_to_none=False)
        outs, deltas, marks, local_loss = [], [[] for _ in self.case.desc["network"]["sizes"][1:]], [], 0.0
        for k in range(K):
            a, b = plan[k][rank]
            c = loss_factor(setup, self.reduction, R, K, b - a, N)
            quiet = self.ddp.no_sync() if (k < K - 1 and setup.no_sync) else contextlib.nullcontext()
            beat("ddp")
            _inject(self.fault, rank, it, "ddp")
            with quiet:
                out = self.ddp(twin.tensor(x[a:b]))
                loss = twin.loss_fn(out, twin.tensor(y[a:b]))
                (loss * c).backward()
            beat("compute")
            local_loss += c * loss.item() / R
            outs.append(out.detach().to(**f64))
            for l, net in enumerate(model.nets):
                deltas[l].append(net.grad.to(**f64) / R)  # DDP divides what backward made by R
            if k < K - 1:  # a fingerprint of the accumulated gradients: equal on all ranks iff synced
                g = torch.cat([p.grad.detach().to(**f64).reshape(-1) for p in twin.params.values()
                               if p.grad is not None])
                marks.append(_np(torch.stack([g.sum(), (g * torch.arange(1, len(g) + 1, **f64)).sum()])))
        reduced = torch.tensor([local_loss], **f64)
        beat("collective")
        dist.all_reduce(reduced)
        beat("compute")
        if hasattr(twin, "clip_grads"):
            twin.clip_grads()  # after DDP's all-reduce, as a data-parallel loop must
        grads = {n: _np(p.grad) if p.grad is not None else np.full(tuple(p.shape), np.nan)
                 for n, p in twin.params.items()}
        twin.optimizer_step() if hasattr(twin, "optimizer_step") else twin.optimizer.step()
        if setup.nudge and setup.nudge == (rank, it):  # a rank drifting by one ulp
            with torch.no_grad():
                w = model.layers[0].weight
                w[0, 0] = torch.nextafter(w[0, 0], w[0, 0] + 1)
        opt_state = twin.optimizer_state() if hasattr(twin, "optimizer_state") else {}
        view = {"loss": float(reduced.item()), "marks": marks,
                "output": _np(torch.cat(outs)), "deltas": [_np(torch.cat(d)) for d in deltas],
                "grads": grads, "optimizer_state": {n: _np(v).reshape(-1) for n, v in opt_state.items()},
                "state_dict": {n: _np(t) for n, t in model.state_dict().items()}}
        if setup.plant and setup.plant[:2] == (rank, it):
            _plant(view, *setup.plant[2:])
        return plan, view


class DDPReference:
    """Rank 0's reference in the lockstep loop (torch_ref/lockstep/loop.py): train_step(x, y) tells every
    rank to go on, runs this rank's DDP step and gathers every rank's view of it
    (torch.distributed.gather_object): {"loss": the reduced loss, "ranks": [view of rank r],
    "plan": the shards, "batch": (x, y)}. finish() tells the other ranks to stop."""

    def __init__(self, shards_):
        self.shards, self.it = shards_, 0

    def train_step(self, x, y):
        _go(True, self.shards)
        plan, view = self.shards.step(self.it, x, y)
        views = [None] * self.shards.world
        self.shards.beat("collective")
        dist.gather_object(view, views, dst=0)
        self.shards.beat("compute")
        self.it += 1
        return {"loss": views[0]["loss"], "ranks": views, "plan": plan, "batch": (x, y)}

    def finish(self):
        _go(False, self.shards)

    def restore(self, state, optimizer_state, schedule):
        """(Never called: no second opinion re-anchors a data-parallel run.)"""
        raise NotImplementedError("a data-parallel run is not re-anchored")


def _follow(shards_, batches):
    """Every rank but 0: step and send this rank's view, as long as rank 0 says go on."""
    it = 0
    while _go(False, shards_):
        _, view = shards_.step(it, *next(batches))
        shards_.beat("collective")
        dist.gather_object(view, None, dst=0)
        shards_.beat("compute")
        it += 1


def _go(go, shards_):
    """Rank 0's word at the start of each step, broadcast: True to go on, False to stop (`go` is
    what rank 0 says; the other ranks' is ignored). Returns the word."""
    word = torch.tensor([1.0 if go else 0.0], dtype=torch.float64, device=shards_.device)
    shards_.beat("collective")
    dist.broadcast(word, src=0)
    shards_.beat("compute")
    return bool(word.item())


def _plant(view, part, key):
    """Test hook (Setup.plant): this rank reports a wrong value, its first element of view[part][key]
    moved by 1e-3 of its size (plus 1e-3), far outside any tolerance."""
    if part == "loss":
        view["loss"] += 1e-3 * (abs(view["loss"]) + 1.0)
        return
    v = view[part] if key is None else view[part][key]
    v.reshape(-1)[0] += 1e-3 * (abs(v.reshape(-1)[0]) + 1.0)


def _np(t):
    """A float64 numpy copy of a tensor (or array), on the CPU."""
    return torch.as_tensor(t).detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def run_case(case, rank, world, device, beat=None, fault=None, reduction=None):
    """Train one Case on this rank in lockstep with the others. On rank 0, the lockstep loop
    (torch_ref/lockstep/loop.py) runs the manual engine against DDPReference, judged by DataParallelRule,
    and returns the Result; the other ranks follow (and return None)."""
    beat = beat or _Heartbeat(None, rank)
    desc = case.desc
    reduction = reduction or batch_reduction(desc)
    dtype = np.dtype(desc["run"]["dtype"])
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    shards_ = _Shards(case, rank, world, device, state, reduction, beat, fault)
    batches = manual.data.batches(desc, dtype)
    if rank != 0:
        _follow(shards_, batches)
        return None
    rtol, atol = tolerance(dtype)
    reference = DDPReference(shards_)
    impl = plugin.guarded(desc, None, "manual")
    impl.load_state_dict(state)
    record = case.record
    history = History(desc["run"]["steps"], record if callable(record) else None) if record else None
    make_rule = lambda m, r: DataParallelRule(m, r, rtol, atol, desc, reduction, state, history)  # noqa: E731
    out = Loop(reference, impl, make_rule, rtol, atol, history=history).run(batches, desc["run"]["steps"])
    reference.finish()
    rule, nan = out.rule, float("nan")
    parallel = DataParallel(world, case.accumulate, dist.get_backend(), reduction, scaling_note(case, reduction, world),
                            rule.replicas_bitwise if rule else True, case.label)
    losses = {"manual": float(out.m["loss"]) if out.m else nan, "reference": out.r["loss"] if out.r else nan}
    return Result(out.first is None, out.steps, out.first, rule.stats() if rule else {}, str(dtype),
                  desc["run"]["device"], "free", losses, parallel=parallel, history=history)


def device_for(desc, local_rank, local_world):
    """(torch.device, backend): gloo on CPU; nccl with one GPU per rank."""
    if desc["run"]["device"] == "cuda":
        prepare_device("cuda")
        have = torch.cuda.device_count()
        if have < local_world:
            raise SpecError("run.device", f"cuda with {local_world} rank(s) on this machine needs one GPU per rank,"
                                          f" found {have}")
        if local_rank < have:
            torch.cuda.set_device(local_rank)  # nccl: this process's own GPU
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


def worker(rank, world, cases, reductions, port, timeout, shared, results_out, fault, parent):
    """The body of a spawned rank: join the group, run every case, rank 0 sends the results to
    the parent through `results_out` (a pipe: no file to leave behind). The rank dies with its
    parent process (see `check`) and ignores SIGINT: Ctrl-C reaches the whole process group, and
    the command's process, not each rank, decides what happens (it stops the ranks)."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beat = _Heartbeat(shared, rank)
    beat("init")
    torch.set_num_threads(1)  # R processes share the machine's cores
    device, backend = device_for(cases[0].desc, rank, world)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout))
    try:
        results = [run_case(c, rank, world, device, beat, fault, red) for c, red in zip(cases, reductions)]
        beat("collective")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        results_out.send_bytes(pickle.dumps(results))
    results_out.close()
    beat("done")
