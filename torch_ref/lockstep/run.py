"""The lockstep cross-check: an implementation and the torch twin, step by step.

Both sides start from the same parameters and get the same batches. At every iteration the
results are compared in the order the computation produces them:

    output → loss → delta (dE/dnet per layer) → grad (per parameter, after clipping)
           → optim (optimizer state, after the update) → param (after the update)

(a layer list adds forward, each module's output, first, buffer, the running statistics, after
param, and with [run] eval_every = k, eval: the evaluation pass's output, every k iterations,
last; torch_ref/lockstep/evaluation.py)

and the run stops at the first mismatch, which is reported with its iteration, stage, tensor,
worst index, both values and the tolerance. Two modes:

    free    both sides train on their own from the shared start (the default): a float64 check
            of the whole trajectory;
    resync  after every iteration the implementation restarts from the twin's updated
            parameters and optimizer state, so each step is judged on its own (long float32 runs);
    shadow  float32, free-running, each quantity judged by its distance from a float64 shadow twin
            against the float32 twin's own distance (torch_ref/lockstep/shadow.py; long float32 runs).

This module sets a run up (the reference, the implementation, the rule: Checker, or shadow.ShadowRule)
and makes its Result; the loop itself is torch_ref/lockstep/loop.py's, which the data-parallel check shares.
"""
import numpy as np

import manual.data
import manual.init
import manual.trainer

from .finite_differences import FDCheck
from ..twin.model import Twin, prepare_device
from ..implementation import plugin
from ..implementation.contract import Conformer
from .checker import Checker, History
from .diagnosis import explain, tensor_of
from .evaluation import Evaluation
from .loop import Loop, Outcome
from .rounding import SecondOpinion, Start
from .shadow import ShadowRule, ShadowTwins
from ..errors import SpecError
from ..description.fits import check_fits
from ..description.layers import module_types
from ..testing import tolerance
from .verdict import STAGES, Result, Rounding, raised, skipped_stages

MODES = ("free", "resync", "shadow")


def module_label(layers, name):
    """The module a compared tensor belongs to, "layers.1 (BatchNorm2d)": the longest module name
    that is `name` or prefixes it; "" for none (output, loss)."""
    types = module_types(layers)
    owners = [m for m in types if name == m or name.startswith(m + ".")]
    return f"{max(owners, key=len)} ({types[max(owners, key=len)]})" if owners else ""


def lockstep(desc, impl=None, mode="free", fd_steps=0, impl_name=None, record=False, progress=None,
             skip_stages=(), step_timeout=None, attribution=False):
    """Run the cross-check described by `desc` (a parsed description). `impl` is any object with
    load_state_dict/train_step; by default the manual engine. Returns a `Result`.

    A plug-in is called through its guard (torch_ref/implementation/plugin.py: copies in and out, a time limit of
    `step_timeout` seconds per call, default 300, 0 for none); its results are checked against the
    contract: breaking it raises `ImplError` (exit 2); an exception raised by its own code (any
    BaseException but a real interruption), or a call out of time, ends the run as a failure at
    stage "exception" (exit 1). `skip_stages` (e.g. ["loss"], --skip-stage) are not compared; the
    Result lists them under `skipped`. `fd_steps` > 0 adds central finite differences as a third opinion on the
    gradients of the first `fd_steps` iterations (2 forward passes per parameter element).
    `record=True` keeps, per iteration, both losses and every tensor's largest differences
    (`Result.history`, for reports and plots; shadow mode: both distances from the shadow and the allowance); `record` may also be a callable keep(it, m, r), which
    is then handed both sides' results of every iteration compared (the HTML page's recorder);
    `progress(it, steps)` is called before each iteration. A failed run's first mismatch gets a
    one-line diagnosis (lockstep/diagnosis.py: a factor, the transpose, another iteration's value...)
    and, with `attribution=True` (api.check's default; off with --no-attribution), the zoo's mistakes
    that reproduce it exactly (zoo/attribution.py, bounded in cost)."""
    if mode not in MODES:
        raise SpecError("mode", f"unknown lockstep mode {mode!r}; expected one of {list(MODES)}")
    skip = skipped_stages(skip_stages)
    check_fits(desc, record)  # before anything is allocated: the dtype's range, the memory (and history's)
    shadow = mode == "shadow"  # float32 judged against a float64 shadow twin: torch_ref/lockstep/shadow.py
    if shadow and desc["run"]["dtype"] != "float32":
        raise SpecError("mode", f"shadow mode checks float32 against a float64 shadow; run.dtype is "
                                f"{desc['run']['dtype']!r}")
    if shadow and "eval_every" in desc["run"] and "eval" not in skip:
        raise SpecError("run.eval_every", "shadow mode does not run the evaluation pass: use free or resync mode"
                                          " (or --skip-stage eval)")
    if shadow and fd_steps:
        raise SpecError("mode", "shadow mode takes no finite differences (--fd): use free or resync for those")
    run = desc["run"]
    prepare_device(run["device"])
    dtype = np.dtype(run["dtype"])
    rtol, atol = tolerance(dtype)
    impl_name = impl_name or ("manual" if impl is None else type(impl).__qualname__)
    conform = Conformer(trusted=impl is None)  # the manual engine needs no conversion
    impl = plugin.guarded(desc, impl, impl_name, step_timeout)
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    twin = ShadowTwins(desc, state) if shadow else Twin(desc, state)
    fd = FDCheck(desc, fd_steps) if fd_steps > 0 else None

    history = History(run["steps"], record if callable(record) else None) if record else None
    if hasattr(record, "history"):
        record.history = history  # the page's recorder reads shadow mode's allowances from it
    make_rule = ((lambda m, r: ShadowRule(m, r, skip, history)) if shadow
                 else (lambda m, r: Checker(m, r, rtol, atol, history, skip)))
    rounding = Rounding()
    masks = (lambda it, x: manual.data.dropout_masks(desc, it, len(x))) if desc["network"].get("dropout") else None
    opinion = SecondOpinion(desc, skip, masks)  # (a stateful run's carried state is part of its Start)
    evaluation = evaluation_pass(desc, impl, dtype, rtol, atol, skip, history)
    loop = Loop(twin, impl, make_rule, rtol, atol, conform=conform, opinion=opinion,
                rounding=rounding, mode=mode, start0=Start(state, twin.optimizer_state(), twin.schedule_state()),
                fd=fd, history=history, progress=progress, masks=masks,  # iteration 0's start, shared
                evaluation=evaluation)
    try:
        impl.load_state_dict(state)
    except plugin.Failed as e:
        out = Outcome(raised(0, e, rtol, atol))
    else:
        out = loop.run(manual.data.batches(desc, dtype), run["steps"])
    first, m, r, checker = out.first, out.m, out.r, out.rule
    if first is not None and "layers" in desc["network"]:
        first.module = module_label(desc["network"]["layers"], first.name)
    if first is not None and not np.isnan(first.abs_err) and m is not None:  # (NaN: raised, or diverged)
        diagnose(desc, first, out, state, skip, mode, attribution)
    nan = float("nan")
    losses = {"manual": float(m.get("loss", nan)) if m is not None else nan, "reference": r["loss"] if r else nan}
    if shadow:
        losses["shadow"] = float(r["shadow"]["loss"]) if r else nan
    stats = {**(checker.stats() if checker else {}), **(evaluation.stats() if evaluation else {})}
    not_reported = [s for s in conform.not_reported(r or {}) if s not in skip]
    not_reached = checker.not_reached() if checker else []
    if evaluation is not None and not evaluation.impl_evaluates:
        not_reported.append("eval")
    elif evaluation is not None and "eval" not in stats:
        not_reached.append("eval")
    return Result(first is None, out.steps, first, stats, str(dtype), run["device"], mode, losses, not_reported, fd,
                  impl_name, history=history, not_reached=not_reached,
                  skipped=[s for s in STAGES if s in skip], rounding=rounding.to_json(),
                  final_state=None if m is None or r is None else {"manual": m["state_dict"],
                                                                   "reference": r["state_dict"]})


def diagnose(desc, first, out, state, skip, mode, attribution):
    """Set the mismatch `first`'s diagnosis line and the zoo's mistakes that reproduce it (the
    loop's Outcome `out`: both sides' results at its iteration, the reference's around it; `state`:
    the initial state dict)."""
    first.diagnosis = explain(first, out.m, out.r, out.before, out.after, state, desc, skip)
    value = tensor_of(out.m, first.stage, first.name)
    if attribution and value is not None:
        from ..zoo.attribution import attribute  # the zoo (and its engines) only when asked for
        first.reproduced_by = attribute(desc, first, value, mode)


def evaluation_pass(desc, impl, dtype, rtol, atol, skip, history=None):
    """The evaluation pass of [run] eval_every on the held-out batch (torch_ref/lockstep/evaluation.py),
    None without eval_every or with --skip-stage eval; `impl`: the guarded implementation."""
    every = desc["run"].get("eval_every")
    if not every or "eval" in skip:
        return None
    x, _ = manual.data.holdout_batch(desc, dtype)
    return Evaluation(every, x, rtol, atol, impl.evaluates, history)
