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
rejects gets the second opinion of torch_ref/rounding.py, from the implementation's own start of
that iteration: within the measured rounding allowance, the three runs had parted by rounding, and
both twins continue from the implementation's state (counted in Result.rounding).
"""
import math

import numpy as np

import manual.data
import manual.init
import manual.trainer

from .model import Twin
from .plugin import Conformer, Failed, guarded
from .rounding import SecondOpinion, Start, start_of
from .verdict import STAGES, Mismatch, Result, Rounding, diverged, pairs, prepare_device, raised
from .spec import SpecError
from .testing import shadow_tolerance


def shadow_lockstep(desc, impl=None, impl_name=None, progress=None, skip=(), step_timeout=None):
    """Run the implementation and the float32 twin against a float64 shadow; returns a lockstep Result.

    As the plain lockstep: the implementation is called through its guard, its failure (or a call
    out of time) ends the run at stage "exception", a non-finite reference loss ends it as
    diverged, and stages in `skip` are not compared."""
    run = desc["run"]
    if run["dtype"] != "float32":
        raise SpecError("mode", f"shadow mode checks float32 against a float64 shadow; run.dtype is {run['dtype']!r}")
    prepare_device(run["device"])
    factor, rtol, atol = shadow_tolerance()
    impl_name = impl_name or ("manual" if impl is None else type(impl).__qualname__)
    conform = Conformer(trusted=impl is None)
    impl = guarded(desc, impl, impl_name, step_timeout)
    state32 = {k: v.astype(np.float32) for k, v in manual.init.initial_state(desc).items()}
    twin = Twin(desc, state32)
    shadow = Twin(desc, {k: v.astype(np.float64) for k, v in state32.items()}, dtype="float64")
    batches = manual.data.batches(desc, np.float32)
    opinion, rounding = SecondOpinion(desc, skip), Rounding()
    start0, prev = Start(state32, twin.optimizer_state(), twin.schedule_state()), None

    keys, starts, first, m, r, s = None, None, None, None, None, None
    d_man = d_twin = scale = None
    try:
        impl.load_state_dict(state32)
    except Failed as e:
        first = raised(0, e, rtol, atol)
    for it in range(run["steps"] if first is None else 0):
        if progress is not None:
            progress(it, run["steps"])
        x, y = next(batches)
        r = twin.train_step(x, y)
        s = shadow.train_step(x.astype(np.float64), y if y.dtype.kind == "i" else y.astype(np.float64))
        try:
            m_raw = impl.train_step(x, y)
        except Failed as e:
            first = raised(it, e, rtol, atol)
            break
        if not math.isfinite(r["loss"]):
            first = diverged(it, r["loss"], rtol, atol)
            break
        m = conform(it, m_raw, r)
        triples = [(st, name, mv, rv, s_value(s, st, name)) for st, name, mv, rv in pairs(m, r, skip)]
        if keys is None:
            keys = [(st, name) for st, name, *_ in triples]
            d_man, d_twin, scale = (np.zeros(len(keys)) for _ in range(3))
        flat = [np.concatenate([np.ravel(t[i]) for t in triples]).astype(np.float64) for i in (2, 3, 4)]
        sizes = [np.size(t[4]) for t in triples]
        starts = np.cumsum([0] + sizes[:-1])
        with np.errstate(invalid="ignore", over="ignore"):
            dm = np.maximum.reduceat(np.abs(flat[0] - flat[2]), starts)
            dt = np.maximum.reduceat(np.abs(flat[1] - flat[2]), starts)
            sc = np.maximum.reduceat(np.abs(flat[2]), starts)
            np.fmax(d_twin, dt, out=d_twin)  # the twin's drift so far, this iteration included
            ok = dm <= factor * d_twin + atol + rtol * sc  # False for NaN
        np.fmax(d_man, dm, out=d_man)
        np.fmax(scale, sc, out=scale)
        if not ok.all():  # the second opinion (torch_ref/rounding.py), from the implementation's start
            start = start_of("free", start0, prev, impl)
            second = None if start is None else opinion.judge(it, start, x, y, m, r)
            if start is None or second is not None:
                k = int(np.argmin(ok))
                stage, name, mv, rv, sv = triples[k]
                first = _mismatch(Mismatch, it, stage, name, mv, rv, sv, dm[k], d_twin[k], sc[k], factor, rtol,
                                  atol, [st for st in dict.fromkeys(st for st, *_ in triples[:k]) if st != stage])
                if start is None:
                    first.note = ("(a free run's difference can be told from rounding only from the implementation's"
                                  " optimizer state: report optimizer_state)")
                elif (second.stage, second.name) == (stage, name):
                    first.note = ("outside the measured rounding allowance of torch's step from the same start too"
                                  f" (largest difference {second.abs_err:.3e} at index {second.index})")
                else:  # the shadow's first failure was drift; the step's own error is elsewhere
                    first = second
                break
            # within the rounding allowance: the three runs had parted by rounding, and both twins
            # continue from the implementation's state
            rounding.excused(it, opinion.used)
            if "optimizer_state" in m or not r.get("optimizer_state"):
                opt = m.get("optimizer_state", {})
                twin.restore(m["state_dict"], opt, r.get("schedule"))
                shadow.restore(m["state_dict"], opt, r.get("schedule"))
                rounding.reanchored(it)
        prev = (it, x, y, m, r)
    steps = run["steps"] if first is None else first.iteration
    stats = {}
    for stage in STAGES:
        ks = [k for k, (st, _) in enumerate(keys or []) if st == stage]
        if ks:
            worst = max(ks, key=lambda k: d_man[k] / max(factor * d_twin[k] + atol + rtol * scale[k], 1e-300))
            stats[stage] = {"max_abs_err": float(d_man[ks].max()),
                            "max_rel_err": float(max(d_man[k] / max(scale[k], 1e-300) for k in ks)),
                            "worst_tensor": keys[worst][1],
                            "twin_abs_err": float(d_twin[ks].max()),
                            "twin_rel_err": float(max(d_twin[k] / max(scale[k], 1e-300) for k in ks))}
    nan = float("nan")
    losses = {"manual": float(m["loss"]) if m else nan, "reference": r["loss"] if r else nan,
              "shadow": float(s["loss"]) if s else nan}
    return Result(first is None, steps, first, stats, "float32", run["device"], "shadow", losses,
                  not_reported=[st for st in conform.not_reported(r or {}) if st not in skip], impl=impl_name,
                  skipped=[st for st in STAGES if st in skip], rounding=rounding.to_json())


def s_value(s, stage, name):
    """The shadow's value of a compared quantity (the same keys as the twin's)."""
    if stage in ("output", "loss"):
        return s[stage]
    part = {"delta": "deltas", "grad": "grads", "optim": "optimizer_state", "param": "state_dict"}[stage]
    return s[part][name]


def _mismatch(Mismatch, it, stage, name, mv, rv, sv, dm, dt, sc, factor, rtol, atol, passed):
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
