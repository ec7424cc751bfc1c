"""The one-line diagnosis of a data-parallel mismatch: each known mistake (a loss not scaled for the
ranks, the micro-batches' reduction, a gradient synced too early) is tried against the manual
engine, and the one that reproduces the ranks' gradients is named."""
import numpy as np

import manual.data
import manual.init
import manual.trainer

from ..testing import compare
from .cases import Setup, loss_factor, loss_label


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
