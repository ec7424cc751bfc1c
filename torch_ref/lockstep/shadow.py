"""Free-running float32 with a float64 shadow: the lockstep mode for long float32 runs.

Three runs start from the same float32 parameters and get the same float32 batches: the
implementation (float32), the torch twin (float32) and a shadow twin in float64 (the same values,
widened). Float32 rounding makes both float32 runs drift from the shadow, and over thousands of
iterations the drift outgrows any fixed atol/rtol. So a float32 quantity is judged against what
float32 itself achieves: for every compared tensor, at every iteration,

    d_manual = max |manual − shadow|        d_twin = max |twin − shadow|, the largest so far in the run
    pass  ⇔  d_manual ≤ factor · d_twin + atol + rtol · max |shadow|

with factor, rtol and atol from the one tolerance table (TOLERANCES["shadow"], torch_ref/testing.py).
A correct implementation is about as far from the float64 truth as torch's float32 is; a wrong
formula is as far as its error, which float32 rounding does not explain. Both distances are
reported, per stage, over the whole run.

d_twin is the float32 twin's largest distance on that tensor up to this iteration: free-running
float32 drift only accumulates, and a one-element tensor (a bias, the loss) where the twin lands on
the shadow by luck at one iteration must not fail a correct implementation. A tensor this rule
rejects gets the second opinion of torch_ref/lockstep/rounding.py, from the implementation's own start of
that iteration: within the measured rounding allowance, the three runs had parted by rounding, and
both twins continue from the implementation's state (counted in Result.rounding).

This module holds what is particular to the mode, the reference (ShadowTwins) and the rule
(ShadowRule); the loop is the lockstep's own (torch_ref/lockstep/run.py), as for free and resync.
"""
import numpy as np

from ..twin.model import Twin
from ..testing import shadow_tolerance
from .states import STATE_KEYS, is_state
from .verdict import STAGES, Mismatch, pairs


class ShadowTwins:
    """The reference of shadow mode: the float32 twin, and the float64 shadow twin stepping beside
    it on the same batches (widened); train_step gives the twin's result with the shadow's under
    "shadow". restore() re-anchors both (torch_ref/lockstep/rounding.py's second opinion)."""

    def __init__(self, desc, state32):
        self.twin = Twin(desc, state32)
        self.shadow = Twin(desc, {k: np.asarray(v, dtype=np.float64) for k, v in state32.items()}, dtype="float64")

    def train_step(self, x, y, **masks):
        r = self.twin.train_step(x, y, **masks)
        wide = [a if a.dtype.kind == "i" else a.astype(np.float64) for a in (x, y)]  # token ids, class indices stay
        r["shadow"] = self.shadow.train_step(*wide, **masks)
        return r

    def restore(self, state, optimizer_state, schedule, carried=False):
        self.twin.restore(state, optimizer_state, schedule, carried)
        self.shadow.restore(state, optimizer_state, schedule, carried)

    def state_dict(self):
        return self.twin.state_dict()

    def optimizer_state(self):
        return self.twin.optimizer_state()

    def schedule_state(self):
        return self.twin.schedule_state()


class ShadowRule:
    """The shadow criterion (the module docstring) over consecutive iterations, as the lockstep's
    Checker applies the fixed one: check_many, absorb, explain, stats, not_reached."""

    def __init__(self, m, r, skip=(), history=None):
        self.factor, self.rtol, self.atol = shadow_tolerance()
        self.skip, self.history = skip, history
        self.keys = [(st, name) for st, name, _, _ in pairs(m, r, skip)]
        if history is not None:  # per iteration: both distances, the allowance (checker.History)
            history.layout(self.keys, shadow=True)
        self.size = 2 * sum(np.size(rv) for _, _, _, rv in pairs(m, r, skip))  # three sides held, as 2 of float64
        self.d_man, self.d_twin, self.scale = (np.zeros(len(self.keys)) for _ in range(3))

    def check_many(self, steps):
        """None if every tensor of these iterations passes, else the first Mismatch; the distances
        of every iteration compared are folded into the run's (d_twin before the judgement)."""
        for it, m, r in steps:
            s = r["shadow"]
            triples = [(st, name, mv, rv, s_value(s, st, name)) for st, name, mv, rv in pairs(m, r, self.skip)]
            flat = [np.concatenate([np.ravel(t[i]) for t in triples]).astype(np.float64) for i in (2, 3, 4)]
            starts = np.cumsum([0] + [np.size(t[4]) for t in triples][:-1])
            with np.errstate(invalid="ignore", over="ignore"):
                dm = np.maximum.reduceat(np.abs(flat[0] - flat[2]), starts)
                dt = np.maximum.reduceat(np.abs(flat[1] - flat[2]), starts)
                sc = np.maximum.reduceat(np.abs(flat[2]), starts)
                np.fmax(self.d_twin, dt, out=self.d_twin)  # the twin's drift so far, this iteration included
                ok = (dm <= self.factor * self.d_twin + self.atol + self.rtol * sc) & (dm < np.inf)  # False for NaN
            np.fmax(self.d_man, dm, out=self.d_man)
            np.fmax(self.scale, sc, out=self.scale)
            if self.history is not None:
                self.record(it, dm, sc, len(ok) if ok.all() else int(np.argmin(ok)) + 1)
            if not ok.all():
                k = int(np.argmin(ok))
                stage, name, mv, rv, sv = triples[k]
                return _mismatch(it, stage, name, mv, rv, sv, dm[k], self.d_twin[k], sc[k], self.factor,
                                 self.rtol, self.atol,
                                 [st for st in dict.fromkeys(st for st, *_ in triples[:k]) if st != stage])
        return None

    def record(self, it, dm, sc, upto):
        """Iteration `it`'s row of the history: the implementation's distance from the shadow (and
        over the shadow's largest magnitude), the twin's largest so far, the allowance, the ratio
        (infinite for a NaN distance: judged outside); for the first `upto` tensors, those judged
        (the rest of a failing iteration stays NaN, not compared, as the fixed rule leaves it)."""
        h, allowed, c = self.history, self.factor * self.d_twin + self.atol + self.rtol * sc, slice(0, upto)
        h.abs[it, c], h.twin[it, c], h.allowance[it, c] = dm[c], self.d_twin[c], allowed[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            h.rel[it, c] = dm[c] / np.maximum(sc[c], 1e-300)
            h.over[it, c] = np.where(dm[c] < np.inf, dm[c] / allowed[c], np.inf)

    def absorb(self, it, m, r):
        """(An iteration the second opinion passed: its distances are folded already.)"""

    @staticmethod
    def explain(first, second):
        """The mismatch to report when the second opinion rejects too: the shadow's own words where
        both name the same tensor, else the step's (the shadow's first failure was drift)."""
        if (second.stage, second.name) != (first.stage, first.name):
            return second
        first.note = ("outside the measured rounding allowance of torch's step from the same start too"
                      f" (largest difference {second.abs_err:.3e} at index {second.index})")
        return first

    def stats(self):
        f, rtol, atol = self.factor, self.rtol, self.atol
        d_man, d_twin, scale, out = self.d_man, self.d_twin, self.scale, {}
        for stage in STAGES:
            ks = [k for k, (st, _) in enumerate(self.keys) if st == stage]
            if ks:
                worst = max(ks, key=lambda k: d_man[k] / max(f * d_twin[k] + atol + rtol * scale[k], 1e-300))
                out[stage] = {"max_abs_err": float(d_man[ks].max()),
                              "max_rel_err": float(max(d_man[k] / max(scale[k], 1e-300) for k in ks)),
                              "worst_tensor": self.keys[worst][1],
                              "twin_abs_err": float(d_twin[ks].max()),
                              "twin_rel_err": float(max(d_twin[k] / max(scale[k], 1e-300) for k in ks))}
        return out

    def not_reached(self):
        return []


def s_value(s, stage, name):
    """The shadow's value of a compared quantity (the same keys as the twin's)."""
    if stage in ("output", "loss"):
        return s[stage]
    if is_state(stage, name, s):  # a recurrent module's per-time-step states (lockstep/states.py)
        return s[STATE_KEYS[stage]][name]
    part = {"forward": "forward", "delta": "deltas", "grad": "grads", "optim": "optimizer_state",
            "param": "state_dict", "buffer": "state_dict"}[stage]
    return s[part][name]


def _mismatch(it, stage, name, mv, rv, sv, dm, dt, sc, factor, rtol, atol, passed):
    mv, rv, sv = (np.asarray(v, dtype=np.float64) for v in (mv, rv, sv))
    with np.errstate(invalid="ignore"):
        err = np.abs(mv - sv)
    flat = int(np.nanargmax(np.where(np.isnan(err), np.inf, err))) if err.size else 0
    index = tuple(int(i) for i in np.unravel_index(flat, sv.shape)) if sv.ndim else ()
    mval, rval, sval = float(mv[index]), float(rv[index]), float(sv[index])
    allowed = factor * dt + atol + rtol * sc
    detail = "\n  ".join([
        f"worst element at {'index ' + str(index) if index else 'the value'}: manual = {mval!r}, "
        f"float32 twin = {rval!r}, float64 shadow = {sval!r}",
        f"distance from the float64 shadow (max over the tensor): manual {dm:.3e},"
        f" float32 twin {dt:.3e} (its largest so far)",
        f"allowed: factor {factor:g} * {dt:.3e} + atol {atol:g} + rtol {rtol:g} * {sc:.3e} = {allowed:.3e}",
    ])
    return Mismatch(it, stage, name, index, mval, rval, float(dm), float(dm / max(sc, 1e-300)), atol, rtol,
                    1, int(sv.size), detail, passed)
