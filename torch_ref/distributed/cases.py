"""What a data-parallel case is and how its batches are split: the set-up (Setup, Case), the shards
(contiguous rows, as np.array_split), the loss's reduction and the scaling each rank applies, and
the checks a case must pass before any process starts."""
from dataclasses import dataclass, field

import numpy as np

import manual.data
import manual.init
import manual.trainer

from ..errors import SpecError


STAGES = ("output", "loss", "delta", "sync", "grad", "optim", "param", "replica")


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
    plant: tuple = ()  # test hook (rank, iteration, part, key): that rank's report of the iteration is
    #                    wrong in its view's part ("loss", "output", "deltas", "grads", ...), key (a
    #                    name; a layer for "deltas"; None for "loss", "output"), first element, as sent


@dataclass
class Case:
    """One data-parallel check: a parsed description, K micro-batches per step, a Setup; `record`
    as the lockstep's (True: rank 0 keeps the per-iteration history, Result.history, for reports;
    a callable keep(it, m, r): that too, and it is handed every iteration compared: the page's recorder)."""

    desc: dict
    accumulate: int = 1
    setup: Setup = field(default_factory=Setup)
    label: str = ""
    record: object = False


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
    if net["loss"] == "half-sse" and reduction == "sum":  # the seed's loss as it always was: a sum
        reduction = None
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
