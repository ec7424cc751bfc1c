"""What one rank does: its heartbeat, DDP's forward and backward on its shards, the exchange with
the checking rank (rank 0), and rank 0's comparison against the manual full batch."""
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
import manual.trainer

from ..interrupt import die_with_parent
from ..verdict import prepare_device
from ..model import Twin
from ..errors import SpecError
from ..testing import tolerance
from .cases import batch_reduction, loss_factor, scaling_note, shards
from .diagnosis import diagnose
from .results import DistResult, Stages


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


def run_case(case, rank, world, device, beat=None, fault=None, reduction=None):
    """Train one Case on this rank in lockstep with the others; rank 0 returns the DistResult."""
    beat = beat or _Heartbeat(None, rank)
    desc, setup, K, R = case.desc, case.setup, case.accumulate, world
    reduction = reduction or batch_reduction(desc)
    dtype = np.dtype(desc["run"]["dtype"])
    rtol, atol = tolerance(dtype)
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    twin = Twin(desc, state, device=device)
    model = twin.model
    left_out = [twin.params[n] for n in setup.left_out]
    for p in left_out:  # frozen while DDP builds its buckets, trained afterwards: the mistake
        p.requires_grad_(False)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    for p in left_out:
        p.requires_grad_(True)
    names = list(twin.params)
    layers = len(desc["network"]["sizes"]) - 1
    C = desc["network"]["sizes"][-1]
    widths = desc["network"]["sizes"][1:]
    f64 = {"dtype": torch.float64, "device": device}

    impl = stages = None
    if rank == 0:
        impl = manual.trainer.build(desc)
        impl.load_state_dict(state)
        stages = Stages(rtol, atol)
    batches = manual.data.batches(desc, dtype)
    first, replicas_bitwise, steps = None, True, 0
    m_loss = r_loss = float("nan")
    layout = None
    for it in range(desc["run"]["steps"]):
        beat("compute", it)
        _inject(fault, rank, it)
        x, y = next(batches)
        N = len(x)
        plan = shards(N, R, K)
        twin.optimizer.zero_grad(set_to_none=False)
        outs, deltas, marks, local_loss = [], [[] for _ in range(layers)], [], 0.0
        for k in range(K):
            a, b = plan[k][rank]
            c = loss_factor(setup, reduction, R, K, b - a, N)
            quiet = ddp.no_sync() if (k < K - 1 and setup.no_sync) else contextlib.nullcontext()
            beat("ddp")
            _inject(fault, rank, it, "ddp")
            with quiet:
                out = ddp(twin.tensor(x[a:b]))
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
                marks.append(torch.stack([g.sum(), (g * torch.arange(1, len(g) + 1, **f64)).sum()]))
        reduced = torch.tensor([local_loss], **f64)
        beat("collective")
        dist.all_reduce(reduced)
        beat("compute")
        if hasattr(twin, "clip_grads"):
            twin.clip_grads()  # after DDP's all-reduce, as a data-parallel loop must
        grads = [twin.params[n].grad.detach().to(**f64).reshape(-1) if twin.params[n].grad is not None
                 else torch.full((twin.params[n].numel(),), float("nan"), **f64) for n in names]
        twin.optimizer_step() if hasattr(twin, "optimizer_step") else twin.optimizer.step()
        if setup.nudge and setup.nudge == (rank, it):  # a rank drifting by one ulp
            with torch.no_grad():
                w = model.layers[0].weight
                w[0, 0] = torch.nextafter(w[0, 0], w[0, 0] + 1)
        opt_state = twin.optimizer_state() if hasattr(twin, "optimizer_state") else {}
        params = model.state_dict()
        parts = [reduced, *marks, *[o.reshape(-1) for o in outs], *[torch.cat(d).reshape(-1) for d in deltas], *grads,
                 *[torch.as_tensor(v, **f64).reshape(-1) for v in opt_state.values()],
                 *[t.detach().to(**f64).reshape(-1) for t in params.values()]]
        mine = torch.cat(parts)
        rows = [sum(plan[k][r][1] - plan[k][r][0] for k in range(K)) for r in range(R)]
        per_row = C + sum(widths)
        fixed = mine.numel() - rows[rank] * per_row
        size = fixed + max(rows) * per_row
        buf = torch.zeros(size, **f64)
        buf[:mine.numel()] = mine
        gathered = [torch.zeros(size, **f64) for _ in range(R)] if rank == 0 else None
        beat("collective")
        dist.gather(buf, gathered, dst=0)
        beat("compute")
        stop = torch.zeros(1, **f64)
        if rank == 0:
            pre = impl.state_dict()
            m = impl.train_step(x, y)
            if layout is None:
                layout = {"opt": [(n, np.size(v)) for n, v in opt_state.items()],
                          "params": [(n, t.numel(), tuple(t.shape)) for n, t in params.items()],
                          "grads": [(n, twin.params[n].numel(), tuple(twin.params[n].shape)) for n in names]}
            views = [_unpack(g.cpu().numpy(), rows[r], K, C, widths, layout) for r, g in enumerate(gathered)]
            first, bitwise = _compare_iteration(stages, it, m, views, plan, R, K, names)
            replicas_bitwise = replicas_bitwise and bitwise
            m_loss, r_loss = float(m["loss"]), views[0]["loss"]
            if first is not None:
                grads_by_rank = [v["grads"] for v in views]
                synced = next((k for k in range(K - 1)
                               if all(np.array_equal(v["marks"][k], views[0]["marks"][k]) for v in views)), None)
                if first.stage == "replica":
                    first.cause, first.diagnosis = "replica-drift", (
                        f"rank {first.rank}'s {first.name} is no longer bitwise equal to rank 0's although every"
                        f" compared value is within tolerance: the ranks updated differently (a rank-dependent"
                        f" step, a non-deterministic kernel, or a write outside the optimizer)")
                else:
                    first.cause, first.diagnosis = diagnose(desc, pre, x, y, plan, reduction, grads_by_rank,
                                                            synced)
                stop[0] = 1
        beat("collective")
        dist.broadcast(stop, src=0)
        beat("compute")
        if stop.item():
            break
        steps = it + 1
    if rank != 0:
        return None
    return DistResult(first is None, steps, first, stages.stats, R, K, dist.get_backend(), str(dtype),
                      reduction, scaling_note(case, reduction, R), replicas_bitwise,
                      {"manual": m_loss, "reference": r_loss}, case.label)


def _unpack(buf, rows, K, C, widths, layout):
    """One rank's gathered buffer back into named arrays (float64)."""
    at = 0

    def take(n, shape=None):
        nonlocal at
        v = buf[at:at + n]
        at += n
        return v.reshape(shape) if shape is not None else v

    view = {"loss": float(take(1)[0]), "marks": [take(2) for _ in range(K - 1)]}
    view["output"] = take(rows * C, (rows, C))
    view["deltas"] = [take(rows * w, (rows, w)) for w in widths]
    view["grads"] = {n: take(size, shape) for n, size, shape in layout["grads"]}
    view["optimizer_state"] = {n: take(size) for n, size in layout["opt"]}
    view["state_dict"] = {n: take(size, shape) for n, size, shape in layout["params"]}
    return view


def _compare_iteration(stages, it, m, views, plan, R, K, names):
    """Rank 0's checks of one iteration, in the order of STAGES; (first DistMismatch or None, bitwise)."""
    stages.begin()
    order = np.concatenate([np.arange(*plan[k][r]) for r in range(R) for k in range(K)])  # rank-major rows
    owner_of = np.empty(len(order), dtype=int)
    for r in range(R):
        for k in range(K):
            owner_of[np.arange(*plan[k][r])] = r
    owner = lambda row: int(owner_of[row])

    def assemble(get):
        full = np.empty((len(order), get(views[0]).shape[1]))
        full[order] = np.concatenate([get(v) for v in views])
        return full

    checks = [("output", "output", m["output"], assemble(lambda v: v["output"]), None, owner)]
    checks.append(("loss", "loss", m["loss"], views[0]["loss"], 0, None))
    for l in reversed(range(len(views[0]["deltas"]))):
        name = f"layers.{l}"
        checks.append(("delta", name, m["deltas"][name], assemble(lambda v: v["deltas"][l]), None, owner))
    for stage, name, mv, rv, rank, own in checks:
        bad = stages.check(it, stage, name, mv, rv, rank, own)
        if bad:
            return bad, True
    for r in range(1, R):
        if views[r]["loss"] != views[0]["loss"]:
            return stages.fail(it, "loss", "loss", f"the reduced loss differs between ranks: rank 0 ="
                               f" {views[0]['loss']!r}, rank {r} = {views[r]['loss']!r}", rank=r), True
    for k in range(K - 1):
        if all(np.array_equal(v["marks"][k], views[0]["marks"][k]) for v in views):
            return stages.fail(it, "sync", f"gradients after micro-batch {k}",
                               f"already bitwise identical on all {R} ranks before the last micro-batch:"
                               " they were all-reduced, no_sync() was not in effect"), True
    if K > 1:
        stages.mark("sync")
    for r in range(R):
        for name in reversed(names):
            if name in m["grads"]:
                bad = stages.check(it, "grad", name, m["grads"][name], views[r]["grads"][name], r)
                if bad:
                    return bad, True
    mo = m.get("optimizer_state", {})
    for r in range(R):
        for name, rv in views[r]["optimizer_state"].items():
            if name in mo:
                bad = stages.check(it, "optim", name, np.ravel(mo[name]), rv, r)
                if bad:
                    return bad, True
    for r in range(R):
        for name, rv in views[r]["state_dict"].items():
            bad = stages.check(it, "param", name, m["state_dict"][name], rv, r)
            if bad:
                return bad, True
    for r in range(1, R):
        for name, rv in views[r]["state_dict"].items():
            ref = views[0]["state_dict"][name]
            differ = rv.view(np.uint64) != ref.view(np.uint64)
            if differ.any():
                i = tuple(int(j) for j in np.argwhere(differ)[0])
                return stages.fail(it, "replica", name,
                                   f"rank {r}'s copy is not bitwise equal to rank 0's: {int(differ.sum())} /"
                                   f" {differ.size} element(s) differ; at index {i}: rank 0 = {ref[i]!r},"
                                   f" rank {r} = {rv[i]!r}", rank=r), False
    stages.mark("replica")
    return None, True


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
