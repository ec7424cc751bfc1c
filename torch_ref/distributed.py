"""Data-parallel lockstep: the torch twin in DistributedDataParallel on R processes, checked at
every iteration against the manual engine's full-batch step.

    backprop-check run SPEC --ranks R [--accumulate K] [--ddp-as-written] [--timeout S] [--json]
    torchrun --nproc-per-node R -m torch_ref.distributed SPEC [same options, no --ranks]
    torchrun --nnodes M --nproc-per-node R --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
             --rdzv-id ID -m torch_ref.distributed SPEC [...]        (the same line on each machine)

Every batch is split into K micro-batches and every micro-batch into R shards, one per rank
(contiguous rows, sizes differing by at most one, as np.array_split). Rank r trains the twin,
wrapped in torch.nn.parallel.DistributedDataParallel, on its shards: K forward/backward passes,
no_sync() on all but the last, then one optimizer step. Rank 0 also runs the manual engine on the
whole batch and, at every iteration, compares in this order:

    output    the ranks' outputs, put back in batch order          vs manual full-batch output
    loss      the loss reduced across ranks (all_reduce)           vs manual full-batch loss
    delta     each rank's dE/dnet rows / R (DDP's averaging)       vs manual rows
    sync      before the last micro-batch the ranks' gradients must still differ (no_sync in effect)
    grad      every rank's all-reduced gradients                   vs manual full-batch gradients
    optim     the optimizer state (if it keeps one), every rank    vs manual, after the update
    param     every rank's updated parameters                      vs manual updated parameters
    replica   every rank's parameters and buffers bitwise equal to rank 0's (a drifting rank is named)

Loss scaling. DDP averages gradients over the R ranks. The full-batch loss is

    L = Σ_{k,r} w_kr · L_kr      w_kr = 1 for a loss summed over samples (half-sse, reduction="sum")
                                 w_kr = n_kr / N for a loss averaged over samples (mse, "mean")

where L_kr is the loss of rank r's shard of micro-batch k (n_kr of the batch's N samples). So rank
r back-propagates c_kr · L_kr with c_kr = R · w_kr, DDP's average is exactly ∇L, and the report says
which factors were used. With --ddp-as-written a rank back-propagates L_kr / K, as a typical
training loop does, and the loss reported is the mean over ranks; a mismatch then comes with a
one-line diagnosis, found by testing the known data-parallel mistakes against the manual engine.
"""
import contextlib
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist

import manual.data
import manual.init
import manual.trainer

from .interrupt import die_with_parent
from .lockstep import Mismatch, prepare_device
from .model import Twin
from .errors import SpecError
from .testing import compare, tolerance

STAGES = ("output", "loss", "delta", "sync", "grad", "optim", "param", "replica")
# torch.multiprocessing's start method: "forkserver" (fresh processes forked from a server that has
# imported torch once; not forked from the caller) where the platform has it, else "spawn";
# BACKPROP_CHECK_START_METHOD=spawn chooses spawn
START_METHOD = os.environ.get("BACKPROP_CHECK_START_METHOD") or (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
DEFAULT_TIMEOUT = 60.0  # seconds a collective may wait for a peer (gloo/nccl), and the watchdog's base


# --- what a rank does in one iteration ------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """How the training step is written on each rank.

    as_written=False is the tool's correct data-parallel step (loss factors c_kr = R·w_kr). The
    other fields reproduce a user's step as written: loss used as is (divided by K when
    accumulating, unless divide_by_k is off), no_sync() on all but the last micro-batch (unless
    no_sync is off), and parameters left out of DDP's buckets (frozen while DDP is built)."""

    as_written: bool = False
    divide_by_k: bool = True
    no_sync: bool = True
    left_out: tuple = ()
    nudge: tuple = ()  # test hook (rank, iteration): that rank's layers.0.weight[0, 0] moves 1 ulp after the step


@dataclass
class Case:
    """One data-parallel check: a parsed description, K micro-batches per step, a Setup."""

    desc: dict
    accumulate: int = 1
    setup: Setup = field(default_factory=Setup)
    label: str = ""


def split(n, parts):
    """np.array_split's boundaries: `parts` contiguous (start, stop) ranges covering range(n)."""
    q, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (i < extra))
    return list(zip(bounds[:-1], bounds[1:]))


def shards(n, ranks, accumulate):
    """plan[k][r] = (start, stop): the rows of a batch of n samples that rank r trains on in
    micro-batch k. Micro-batches first (contiguous), then each is sharded over the ranks."""
    return [[(a + s, a + e) for s, e in split(b - a, ranks)] for a, b in split(n, accumulate)]


def batch_sizes(desc):
    """The distinct batch sizes the run will see (a last partial batch included)."""
    n = len(manual.data.dataset(desc)[0])
    size = desc["data"]["batch_size"]
    stop = n - n % size if desc["data"].get("drop_last") else n
    return sorted({min(size, n - s) for s in range(0, stop, size)}) or [n]


def batch_reduction(desc):
    """"sum" or "mean": how the description's loss reduces over samples, asked of the manual
    engine itself (numbers, not names): the loss of a batch given twice is twice the loss of the
    batch for a sum, the same for a mean."""
    x, y = next(manual.data.batches(desc))
    state = manual.init.initial_state(desc)
    trainer = manual.trainer.build({**desc, "run": {**desc["run"], "dtype": "float64"}})
    losses = []
    for xs, ys in ((x, y), (np.concatenate([x, x]), np.concatenate([y, y]))):
        trainer.load_state_dict(state)
        losses.append(float(trainer.train_step(xs, ys)["loss"]))
    once, twice = losses
    if once != 0 and np.isclose(twice, 2 * once, rtol=1e-9, atol=0):
        return "sum"
    if np.isclose(twice, once, rtol=1e-9, atol=0):
        return "mean"
    raise SpecError("network.loss", f"neither sums nor averages over samples (loss {once!r}, the same batch"
                                    f" twice {twice!r}): it cannot be split across ranks")


def loss_label(desc):
    """The loss as the description names it, with a reduction when it has one: "mse (reduction=sum)"."""
    net = desc["network"]
    reduction = (net.get("loss_args") or {}).get("reduction")
    return f"{net['loss']} (reduction={reduction})" if reduction else str(net["loss"])


def loss_factor(setup, reduction, ranks, accumulate, n, total):
    """c_kr: what a rank multiplies its micro-batch loss by (n of the batch's `total` samples)."""
    if setup.as_written:
        return 1.0 / accumulate if setup.divide_by_k else 1.0
    return float(ranks) if reduction == "sum" else ranks * n / total


def scaling_note(case, reduction, ranks):
    """One sentence for the report: what was done about the loss's reduction, and why."""
    desc, K, setup = case.desc, case.accumulate, case.setup
    loss = loss_label(desc)
    n = max(batch_sizes(desc))
    plan = shards(n, ranks, K)
    sizes = [[b - a for a, b in row] for row in plan]  # [micro-batch][rank]
    factors = [[f"{loss_factor(setup, reduction, ranks, K, m, n):.6g}" for m in row] for row in sizes]
    if K == 1:
        sizes, factors = sizes[0], factors[0]
    micro = f" x {K} micro-batches; per micro-batch, per rank" if K > 1 else ""
    shown = str(factors).replace("'", "")
    where = f"shards of a batch of {n} ({ranks} ranks{micro}): sizes {sizes}, loss factors {shown}"
    if setup.as_written:
        parts = ["each rank's loss used as written"]
        if K > 1:
            parts.append("divided by K" if setup.divide_by_k else "NOT divided by K")
        if not setup.no_sync:
            parts.append("no no_sync()")
        if setup.left_out:
            parts.append(f"left out of DDP's buckets: {', '.join(setup.left_out)}")
        return f"loss scaling: none (--ddp-as-written: {'; '.join(parts)}); {where}"
    if reduction == "sum":
        why = (f"{loss} sums over samples and DDP averages gradients over {ranks} ranks, so every"
               f" rank's loss was multiplied by {ranks} (the world size)")
    elif len(equal := {b - a for row in plan for a, b in row}) == 1:
        why = (f"{loss} averages over samples and the shards are equal, so rank r's loss was weighted by"
               f" R·n_r/N = {loss_factor(setup, reduction, ranks, K, equal.pop(), n):.6g}"
               f"{' (the usual DDP step)' if K == 1 else ''}")
    else:
        why = (f"{loss} averages over samples and the shards are unequal, so rank r's loss was"
               f" weighted by R·n/N, n its samples of the N in the batch (a plain average of the ranks' means is not the full-batch mean)")
    return f"loss scaling: {why}; {where}"


def validate(case, ranks):
    """Refuse, before anything starts, what cannot be run; returns the loss's batch reduction."""
    if not (isinstance(ranks, int) and ranks >= 1):
        raise SpecError("--ranks", f"expected a positive number of processes, got {ranks!r}")
    K = case.accumulate
    if not (isinstance(K, int) and K >= 1):
        raise SpecError("--accumulate", f"expected a positive number of micro-batches, got {K!r}")
    smallest = batch_sizes(case.desc)[0]
    if smallest < ranks * K:
        raise SpecError("--ranks", f"a batch of {smallest} sample(s) cannot give each of {ranks} rank(s) x {K}"
                                   f" micro-batch(es) a sample (data.batch_size = {case.desc['data']['batch_size']})")
    names = _param_names(case.desc)
    for name in case.setup.left_out:
        if name not in names:
            raise SpecError("left_out", f"no trained parameter {name!r}; expected one of {names}")
    return batch_reduction(case.desc)


def _param_names(desc):
    trainer = manual.trainer.build(desc)
    return [n for n, p in trainer.params.items() if p.requires_grad]


# --- the report ----------------------------------------------------------------------------------

@dataclass
class DistMismatch(Mismatch):
    """A lockstep Mismatch that also names the rank (None: every rank) and a diagnosis."""

    rank: int | None = None
    diagnosis: str = ""
    cause: str = ""

    def __str__(self):
        lines = super().__str__().split("\n")
        if self.rank is not None:
            lines[0] += f", rank {self.rank}"
        if self.diagnosis:
            lines.append(f"  diagnosis: {self.diagnosis}")
        return "\n".join(lines)


@dataclass
class DistResult:
    ok: bool
    steps_checked: int
    first_mismatch: DistMismatch | None
    stats: dict          # stage -> {"max_abs_err", "max_rel_err", "worst_tensor"}
    ranks: int
    accumulate: int
    backend: str
    dtype: str
    reduction: str       # the loss's reduction over samples: "sum" or "mean"
    scaling: str         # what was done about it, one sentence
    replicas_bitwise: bool
    final_loss: dict
    label: str = ""

    def to_json(self):
        d = asdict(self)
        d["first_mismatch"] = self.first_mismatch.to_json() if self.first_mismatch else None
        return d

    def summary(self):
        head = (f"{'PASS' if self.ok else 'FAIL'}: {self.steps_checked} iteration(s) checked in lockstep,"
                f" DistributedDataParallel on {self.ranks} rank(s) ({self.backend}, {self.dtype}"
                f"{f', {self.accumulate} micro-batches per step' if self.accumulate > 1 else ''})"
                f" against the manual full-batch step")
        lines = [head, f"  {self.scaling}",
                 f"  {'stage':<15} {'max abs err':>12} {'max rel err':>12}  worst tensor"]
        for s, v in self.stats.items():
            lines.append(f"  {s:<15} {v['max_abs_err']:12.3e} {v['max_rel_err']:12.3e}  {v['worst_tensor']}")
        if self.accumulate > 1:
            once = not (self.first_mismatch and self.first_mismatch.stage == "sync")
            lines.append(f"  gradients all-reduced once per step (no_sync() in effect before the last micro-batch):"
                         f" {'yes' if once else 'no'}")
        lines.append(f"  parameters bitwise identical on every rank at every iteration checked:"
                     f" {'yes' if self.replicas_bitwise else 'no'}")
        lines.append(f"  final loss: manual {self.final_loss['manual']!r},"
                     f" reduced across ranks {self.final_loss['reference']!r}")
        if self.first_mismatch:
            lines.append(str(self.first_mismatch))
        return "\n".join(lines)


class _Stages:
    """Rank 0's comparisons for one run: the one comparison helper, statistics per stage."""

    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.stats = {}
        self.passed = []

    def begin(self):
        self.passed = []

    def check(self, it, stage, name, manual_value, reference, rank=None, owner=None):
        """None if within tolerance, else the DistMismatch. `owner(index)` names the rank of a row."""
        c = compare(manual_value, reference, self.rtol, self.atol)
        s = self.stats.setdefault(stage, {"max_abs_err": 0.0, "max_rel_err": 0.0, "worst_tensor": name})
        s["max_abs_err"] = max(s["max_abs_err"], c.max_abs_err)
        if c.max_rel_err > s["max_rel_err"]:
            s["max_rel_err"], s["worst_tensor"] = c.max_rel_err, name
        if c.ok:
            self.mark(stage)
            return None
        if owner is not None and c.index:
            rank = owner(c.index[0])
        return DistMismatch(it, stage, name, c.index, c.manual, c.reference, c.abs_err, c.rel_err,
                            self.atol, self.rtol, c.n_bad, c.numel, c.shape_error,
                            [p for p in self.passed if p != stage], rank=rank)

    def mark(self, stage):
        if not self.passed or self.passed[-1] != stage:
            self.passed.append(stage)

    def fail(self, it, stage, name, detail, rank=None):
        return DistMismatch(it, stage, name, (), float("nan"), float("nan"), float("nan"), float("nan"),
                            self.atol, self.rtol, detail=detail,
                            passed_before=[p for p in self.passed if p != stage], rank=rank)


# --- diagnosis: which known mistake explains the gradients ----------------------------------------

def diagnose(desc, state, x, y, plan, reduction, grads, synced_early):
    """(cause, one line) for a mismatch, from the evidence: `grads[r]` are rank r's gradients after
    DDP, `state` the parameters before the step, `plan` the shards, `synced_early` the micro-batch
    after which the gradients were already equal on every rank (None if they never were)."""
    R, K = len(plan[0]), len(plan)
    N = plan[-1][-1][1]
    if synced_early is not None:
        return "no_sync-missing", (
            f"after micro-batch {synced_early} of {K} the gradients were already identical on every rank:"
            f" DDP all-reduced before the last micro-batch, so no_sync() was not in effect"
            f" ({K - 1} extra all-reduce(s) per step; the sum itself is unchanged)")
    names = list(grads[0])
    local = _shard_grads(desc, state, x, y, plan)  # local[k][r][name] = ∇L_kr, by the manual engine
    unsynced = [n for n in names if any(not np.array_equal(grads[r][n], grads[0][n]) for r in range(1, R))]
    if unsynced:
        own = {n: sum(loss_factor(Setup(), reduction, R, K, b - a, N) * local[k][0][n]
                      for k, row in enumerate(plan) for a, b in [row[0]]) for n in unsynced}
        confirmed = all(compare(own[n], grads[0][n], 1e-9, 1e-12).ok for n in unsynced)
        return "left-out-of-buckets", (
            f"the gradient of {', '.join(repr(n) for n in unsynced)} differs between ranks"
            f"{' and is each rank' + chr(39) + 's own local gradient' if confirmed else ''}: it was never"
            f" all-reduced, the parameter was left out of DDP's buckets (requires_grad off when DDP wrapped"
            f" the model, or ignored), so the ranks drift apart")

    def predicted(c):  # the all-reduced gradient if every rank multiplied its loss by c(k, n)
        return {n: sum(c(k, b - a) * local[k][r][n] for k, row in enumerate(plan)
                       for r, (a, b) in enumerate(row)) / R for n in names}

    sizes = [b - a for row in plan for a, b in row]
    loss = loss_label(desc)
    hypotheses = [("ok", lambda k, n: loss_factor(Setup(), reduction, R, K, n, N), "")]
    if reduction == "sum":
        hypotheses += [
            ("sum-loss-averaged", lambda k, n: 1.0 / K,
             f"{loss} sums over samples but DDP averages gradients over the {R} ranks"
             f"{f' and the loss was divided by K = {K}' if K > 1 else ''}: every gradient is 1/{R * K} of the"
             f" full-batch gradient; multiply each rank's loss by the world size {R}"
             f"{' and do not divide a summed loss by K' if K > 1 else ''}"),
            ("sum-loss-averaged", lambda k, n: 1.0,
             f"{loss} sums over samples but DDP averages gradients over the {R} ranks: every gradient is"
             f" 1/{R} of the full-batch gradient; multiply each rank's loss by the world size {R}"),
            ("sum-loss-divided-by-k", lambda k, n: R / K,
             f"a summed loss ({loss}) was divided by K = {K}: accumulation must add the micro-batch sums"
             f" as they are; gradients are 1/{K} of the full-batch gradient"),
        ]
    else:
        hypotheses += [
            ("uneven-mean", lambda k, n: 1.0 / K,
             f"each rank's loss is the mean over its own shard and the shards are unequal (sizes {sizes}):"
             f" DDP's plain average of the ranks' means is not the full-batch mean; weight rank r's loss by"
             f" R·n_r/N"),
            ("accumulate-no-divide", lambda k, n: 1.0,
             f"the {K} micro-batch losses were not divided by K = {K}: accumulation adds their gradients,"
             f" so every gradient is {K} times the full-batch gradient; divide each micro-batch loss by K"),
        ]
    for cause, c, line in hypotheses:
        want = predicted(c)
        if all(compare(want[n], grads[0][n], 1e-9, 1e-12).ok for n in names):
            if cause == "ok":
                return "ok", "the all-reduced gradients equal the full-batch ones: no data-parallel mistake in them"
            return cause, line
    full = np.concatenate([predicted(hypotheses[0][1])[n].ravel() for n in names])
    seen = np.concatenate([grads[0][n].ravel() for n in names])
    ratio = float(seen @ full / (full @ full)) if full.any() else float("nan")
    return "unknown", (f"the all-reduced gradients match none of the known data-parallel mistakes"
                       f" (best single factor against the full-batch gradient: {ratio:.6g})")


def _shard_grads(desc, state, x, y, plan):
    """local[k][r] = {name: ∇L_kr}: the manual engine's gradient of each shard's own loss."""
    trainer = manual.trainer.build(desc)
    out = []
    for row in plan:
        out.append([])
        for a, b in row:
            trainer.load_state_dict(state)
            out[-1].append({n: g.astype(np.float64) for n, g in trainer.train_step(x[a:b], y[a:b])["grads"].items()})
    return out


# --- one rank ------------------------------------------------------------------------------------

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
        stages = _Stages(rtol, atol)
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


# --- process group and launching -----------------------------------------------------------------

def _device_for(desc, local_rank, local_world):
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


def _worker(rank, world, cases, reductions, port, timeout, shared, results_out, fault, parent):
    """The body of a spawned rank: join the group, run every case, rank 0 sends the results to
    the parent through `results_out` (a pipe: no file to leave behind). The rank dies with its
    parent process (see `check`) and ignores SIGINT: Ctrl-C reaches the whole process group, and
    the command's process, not each rank, decides what happens (it stops the ranks)."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beat = _Heartbeat(shared, rank)
    beat("init")
    torch.set_num_threads(1)  # R processes share the machine's cores
    device, backend = _device_for(cases[0].desc, rank, world)
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
    other); returns their DistResults. Raises SpecError for a bad set-up (before anything starts)
    and RankFailure when a rank raises, dies, hangs or is stopped (SIGSTOP): the others are then
    stopped, nothing is left running. `timeout` bounds every collective (the backend's timeout)
    and the parent's watchdog, which stops everything when no rank has made progress for
    `watchdog` s (default timeout + 15, and 2 minutes more while the ranks start). `fault` is a
    test hook (rank, iteration, "raise"|"exit"|"hang"|"stop"); `on_start(pids)` is called once
    they run; `progress(it, steps)` (as the lockstep's) with the lowest iteration any rank is at.

    Nothing outlives the calling process, even when it is killed by SIGKILL, which no handler
    sees: every rank asks the kernel (prctl PR_SET_PDEATHSIG, Linux) to SIGKILL it when its
    parent ends, and so does the forkserver, the ranks' parent (torch_ref/_forkserver.py, first
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
    os.environ["BACKPROP_CHECK_PARENT_PID"] = str(os.getpid())  # read by torch_ref/_forkserver.py
    if START_METHOD == "forkserver":  # the server imports torch once; every later launch forks from it
        # torch_ref._forkserver first: the server dies with this process (see above)
        ctx.set_forkserver_preload(["torch_ref._forkserver", "torch_ref.distributed", "torch._dynamo"])  # torch.optim imports _dynamo
    shared = ctx.RawArray("d", 3 * ranks)
    results_in, results_out = ctx.Pipe(duplex=False)
    port = free_port()
    steps = cases[0].desc["run"]["steps"] if len(cases) == 1 else None
    pc = torch.multiprocessing.start_processes(
        _worker, args=(ranks, cases, reductions, port, timeout, shared, results_out, fault, os.getpid()),
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


# --- under torchrun ------------------------------------------------------------------------------

def _arguments(parser):
    """The data-parallel options, shared by `backprop-check run` and `python -m torch_ref.distributed`."""
    parser.add_argument("--accumulate", type=int, default=1, metavar="K",
                        help="split every batch into K micro-batches, no_sync() on all but the last")
    parser.add_argument("--ddp-as-written", action="store_true",
                        help="run the usual step as written (loss as is, / K) and diagnose what differs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long a collective waits for a peer (default {DEFAULT_TIMEOUT:g})")


def main(argv=None):
    """One rank under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from the
    environment); rank 0 prints the report and exits 0 (pass), 1 (mismatch) or 2 (bad input)."""
    from . import spec
    from .usage import OneLineParser
    p = OneLineParser(prog="python -m torch_ref.distributed", description=main.__doc__)
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true")
    p.add_argument("--steps", type=int)
    p.add_argument("--dtype")
    p.add_argument("--device")
    _arguments(p)
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    try:
        if "WORLD_SIZE" not in os.environ:
            raise SpecError("WORLD_SIZE", "not set: start this module with torchrun"
                                          " (or use backprop-check run SPEC --ranks R)")
        world, local = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
        desc = spec.override(spec.load(args.spec), args.steps, args.dtype, args.device)
        case = Case(desc, args.accumulate, Setup(as_written=args.ddp_as_written))
        reduction = validate(case, world)
        torch.set_num_threads(1)
        device, backend = _device_for(desc, local, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    except SpecError as e:
        print(f"backprop-check: error: {e}", file=sys.stderr)
        return 2
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    try:
        result = run_case(case, rank, world, device, reduction=reduction)
        # every rank done before any tears down: rank 0 hosts the store, and a rank still in its
        # last exchange when another leaves is aborted (seen under torchrun on two nodes)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return 0
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
