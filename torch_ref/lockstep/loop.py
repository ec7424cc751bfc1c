"""The one lockstep loop, shared by every mode (free, resync, shadow) and the data-parallel check.

Its parts, each given by the caller:

    reference       train_step(x, y) -> r, restore(state, optimizer_state, schedule): the torch
                    twin (model.Twin), the twin with its float64 shadow (shadow.ShadowTwins), or
                    DistributedDataParallel on R ranks gathered on rank 0 (distributed/reference.py)
    implementation  load_state_dict/train_step (load_optimizer_state for resync): a guarded plug-in
                    or the manual engine (plugin.guarded)
    rule            made from the first iteration's results, make_rule(m, r): check_many, explain,
                    absorb, stats, not_reached, size (lockstep.Checker, shadow.ShadowRule,
                    distributed/rule.py's DataParallelRule)

The loop records (a lockstep.History's losses, the second opinion's Rounding) and stops: at the
first mismatch, when the implementation fails, when the reference diverges, or after `steps`.
"""
import math
from dataclasses import dataclass

from ..implementation import plugin
from ..implementation.contract import UNCHECKED
from .evaluation import passed_stages
from .rounding import start_of
from .verdict import diverged, raised

# How far the reference may run ahead of the implementation: at most this many iterations, and
# results of at most this many bytes held (a wide net goes one iteration at a time).
AHEAD_ITERATIONS, AHEAD_BYTES = 64, 32 << 20


@dataclass
class Outcome:
    """What the loop ended with: the first mismatch (None: every iteration passed), the number of
    iterations that passed, the last compared results of both sides, and the rule (None if the
    loop stopped before the first comparison); at a mismatch, the reference's results of the
    iterations just before and after it (None where there are none: the reference had not run ahead),
    for its diagnosis (lockstep/diagnosis.py)."""

    first: object = None
    steps: int = 0
    m: dict | None = None
    r: dict | None = None
    rule: object = None
    before: dict | None = None
    after: dict | None = None


class Loop:
    """The lockstep of `impl` against `reference`, judged by the rule `make_rule(m, r)` builds.

    `conform(it, m, r)` checks and converts each implementation result (contract.Conformer;
    identity by default). `opinion` (rounding.SecondOpinion, None for none) re-judges an iteration
    the rule rejects, `rounding` (verdict.Rounding) counts what it excused; `mode` "resync" loads
    the reference's state into the implementation after every iteration; `start0` is iteration 0's
    start (rounding.Start). `fd` (fdcheck.FDCheck) gets the first `fd.steps` iterations, `history`
    (lockstep.History) the losses, `progress(it, steps)` is called before each iteration.
    `masks(it, x)`: the dropout keep-masks of iteration `it` (manual.data.dropout_masks), handed
    to both sides as train_step(x, y, masks=...); None (the default) for a network without dropout.
    `evaluation` (evaluation.Evaluation, None for none): the evaluation pass after every k-th
    iteration, each side's right after its training step, judged after the chunk's other stages."""

    def __init__(self, reference, impl, make_rule, rtol, atol, *, conform=None, opinion=None, rounding=None,
                 mode="free", start0=None, fd=None, history=None, progress=None, masks=None, evaluation=None):
        self.reference, self.impl, self.make_rule = reference, impl, make_rule
        self.rtol, self.atol = rtol, atol
        self.conform = conform or (lambda it, m, r: m)
        self.opinion, self.rounding, self.mode, self.start0 = opinion, rounding, mode, start0
        self.fd, self.history, self.progress = fd, history, progress
        self.masks = masks
        self.drawn = {}  # iteration -> its masks, drawn once for both sides (this chunk's)
        self.evaluation = evaluation

    def masks_of(self, it, x):
        """Iteration `it`'s dropout masks (None without dropout), drawn once for both sides."""
        if self.masks is None:
            return None
        if it not in self.drawn:
            self.drawn[it] = self.masks(it, x)
        return self.drawn[it]

    def step(self, side, it, x, y):
        """side.train_step(x, y), with iteration `it`'s dropout masks where there are any."""
        masks = self.masks_of(it, x)
        return side.train_step(x, y) if masks is None else side.train_step(x, y, masks=masks)

    def reference_step(self, it, x, y):
        """The reference's step of iteration `it`, with its evaluation pass where one is due."""
        r = self.step(self.reference, it, x, y)
        return r if self.evaluation is None else self.evaluation.reference(it, self.reference, r)

    def run(self, batches, steps):
        """Compare `steps` iterations of `batches` (an iterator of (x, y)); returns the Outcome."""
        fd_steps = self.fd.steps if self.fd is not None else 0
        rule, first, m, r = None, None, None, None
        done, chunk = 0, 1  # done: iterations compared and passed
        prev = None  # (it, x, y, m, r) of the last iteration compared
        around = (None, None)  # the reference's results just before and after a mismatch
        while first is None and done < steps:
            # The reference runs ahead through a chunk of iterations; the implementation follows it
            # through the same ones, and the chunk is compared in one vectorised pass. The reference
            # never takes anything from the implementation before a comparison (in resync mode only
            # the other way round), so this order changes no value and no verdict: it lets torch's
            # code and numpy's each run while the processor's caches hold it, and spreads the
            # comparison's fixed cost (switching at every iteration cost a small net more than the
            # comparison itself).
            ahead = self._ahead(batches, range(done, min(done + chunk, steps)), steps, fd_steps)
            pending, stop = [], None  # (it, x, y, m, r) to compare; what ended the chunk early, if anything
            advanced = 0  # iterations of the chunk the implementation left unchecked (UNCHECKED)
            for it, x, y, before, r in ahead:
                try:  # a plug-in gets its own copy of the batch (the guard's): it cannot reach the twin
                    m = self.step(self.impl, it, x, y)
                except plugin.Failed as e:
                    stop = raised(it, e, self.rtol, self.atol)
                    break
                if not math.isfinite(r["loss"]):
                    stop = diverged(it, r["loss"], self.rtol, self.atol)
                    break
                if m is UNCHECKED:  # (a trace without this iteration) nothing compared: the reference runs free
                    advanced += 1
                    continue
                m = self.conform(it, m, r)
                if before is not None:
                    self.fd.add(it, before, x, y, m, r, self.masks_of(it, x))
                if rule is None:
                    rule = self.make_rule(m, r)
                    chunk = _chunk(rule)
                pending.append((it, x, y, m, r))
                if self.evaluation is not None:
                    try:  # after its step, before a resync changes its state
                        self.evaluation.implementation(it, self.impl, m, r)
                    except plugin.Failed as e:
                        stop = raised(it, e, self.rtol, self.atol)
                        break
                if self.mode == "resync":
                    stop = self._resync(it, r)
                    if stop is not None:
                        break
            first = self._judge(pending, prev, rule)
            if first is not None:  # a mismatch comes before whatever stopped the chunk
                j = next(k for k, p in enumerate(pending) if p[0] == first.iteration)
                _, _, _, m, r = pending[j]
                around = ((pending[j - 1] if j else prev or (None,) * 5)[4],
                          pending[j + 1][4] if j + 1 < len(pending) else None)
            else:
                first = stop
            if self.history is not None:
                for it, _, _, mp, rp in pending:
                    if first is not None and it > first.iteration:
                        break
                    self.history.loss[it] = float(mp.get("loss", math.nan)), float(rp["loss"])
                    if self.history.keep is not None:
                        self.history.keep(it, mp, rp)
            done += len(pending) + advanced
            prev = pending[-1] if pending else prev
            self.drawn.clear()
        if m is UNCHECKED:  # the last results compared, not the iteration left unchecked after them
            m, r = (prev[3], prev[4]) if prev is not None else (None, None)
        return Outcome(first, done if first is None else first.iteration, m, r, rule, *around)

    def _ahead(self, batches, its, steps, fd_steps):
        """The reference's results for the iterations `its` (of `steps`): [(it, x, y, state
        before (kept for finite differences only), r)], cut after a loss that is not finite."""
        ahead = []
        for it in its:
            if self.progress is not None:
                self.progress(it, steps)
            x, y = next(batches)
            before = None
            if it < fd_steps:  # (a stateful run's carried state too: the iteration's forward starts from it)
                before = {**self.reference.state_dict(), **self.reference.carried_state()}
            ahead.append((it, x, y, before, self.reference_step(it, x, y)))
            if not math.isfinite(ahead[-1][-1]["loss"]):
                break
        return ahead

    def _resync(self, it, r):
        """Load the reference's state into the implementation (resync mode); a failure, or None."""
        try:  # the guard hands over copies: keeping them cannot change the twin's values
            self.impl.load_state_dict(r["state_dict"], during="resync")
            self.impl.load_optimizer_state(r.get("optimizer_state", {}), during="resync")
        except plugin.Failed as e:
            return raised(it + 1, e, self.rtol, self.atol)
        return None

    def _judge(self, pending, prev, rule):
        """The first mismatch of a chunk of iterations, or None: the rule's (_judge_rule), or an
        evaluation pass's before it (stage eval is the last of its iteration)."""
        first = self._judge_rule(pending, prev, rule)
        if self.evaluation is None:
            return first
        until = first.iteration if first is not None else None
        return self.evaluation.check(pending, until, passed_stages(rule)) or first

    def _judge_rule(self, pending, prev, rule):
        """The first mismatch of a chunk of iterations, or None. An iteration the rule (the fixed
        tolerance, the shadow's, the data-parallel one) rejects gets the second opinion
        (torch_ref/lockstep/rounding.py), where there is one: within the measured rounding allowance, it
        passes; in free and shadow mode the reference then continues from the implementation's
        state (the runs had parted by rounding), and the rest of the chunk is compared against it."""
        i = 0
        while i < len(pending):
            first = rule.check_many([(it, m, r) for it, _, _, m, r in pending[i:]])
            if first is None or self.opinion is None:
                return first
            j = next(k for k in range(i, len(pending)) if pending[k][0] == first.iteration)
            it, x, y, m, r = pending[j]
            keys = self.opinion.carried_keys
            before = pending[j - 1] if j > 0 else prev
            if it > 0 and (before is None or before[0] != it - 1):  # (a partial trace) its start is unknown
                first.note = (f"(a difference can be told from rounding only from where the implementation started the"
                              f" iteration: the implementation's results of iteration {it - 1} are not given)")
                return first
            start = start_of(self.mode, self.start0, before, self.impl, keys)
            if start is None:
                first.note = ("(a difference can be told from rounding only from where the implementation started the"
                              " iteration: report optimizer_state" + (" and the recurrent modules' states" if keys else "")
                              + ", or use --mode resync)")
                return first
            second = self.opinion.judge(it, start, x, y, m, r)
            if second is not None:
                return rule.explain(first, second)
            rule.absorb(it, m, r)
            self.rounding.excused(it, self.opinion.used)
            if self.mode != "resync" and ("optimizer_state" in m or not r.get("optimizer_state")):
                carried = {k: m["states"][k] for k in keys} if keys else False  # a stateful run's carried state too
                self.reference.restore(m["state_dict"], m.get("optimizer_state", {}), r.get("schedule"), carried)
                self.rounding.reanchored()
                for k in range(j + 1, len(pending)):
                    itk, xk, yk, mk, _ = pending[k]
                    pending[k] = (itk, xk, yk, mk, self.reference_step(itk, xk, yk))
            i = j + 1
        return None


def _chunk(rule):
    """The number of iterations the reference runs ahead, from the size of one iteration's results
    (and at most the rule's `ahead`, where it has one)."""
    per_iteration = 2 * 8 * max(1, rule.size)  # both sides, float64 or less
    return max(1, min(getattr(rule, "ahead", AHEAD_ITERATIONS), AHEAD_ITERATIONS, AHEAD_BYTES // per_iteration))
