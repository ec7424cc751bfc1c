"""A one-line diagnosis under a mismatch: how the implementation's tensor relates to the reference,
when it does in a recognisable way (a constant factor, the transpose, the previous or next
iteration's value, a sign flipped on part of the elements, zeros where the reference is not, the
reference of another tensor), or "" when no relation holds.

Each relation is one small function `relation(m, ctx)` -> the line, or None; RELATIONS tries them in
order and the first that holds is reported. A relation holds when every element of the
implementation's tensor is within the diagnosis tolerance (torch_ref/testing.py's table: the
dtype's, widened by a factor for the relation's own arithmetic) of what the relation predicts, and
the prediction itself is outside the dtype's tolerance of the reference (so a difference of
rounding is never "explained"). It is computed only for the first mismatch of a failed run
(torch_ref/lockstep/run.py), never per iteration.
"""
from dataclasses import dataclass, field

import numpy as np

from manual.schedules import iterations_per_epoch

from ..testing import compare, diagnosis_tolerance, within
from .verdict import pairs


@dataclass
class Context:
    """What the relations compare with: the reference's tensor at the mismatch's iteration, the
    same tensor's reference one iteration back and forward (None where there is none; a parameter's
    value before the step at iteration 0 is the start), the reference's other tensors of the same
    shape at this iteration {"stage 'name'": array}, named constants {name: value} (batch size,
    outputs, learning rate...) for a factor, and named ratios of a parameter's step {name: value}."""

    reference: np.ndarray
    rtol: float
    atol: float
    iteration: int = 0
    previous: np.ndarray | None = None
    next: np.ndarray | None = None
    others: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    step_constants: dict = field(default_factory=dict)
    is_step: bool = False   # a parameter or buffer: `previous` is its value before this step
    factor: float = 1.0     # the diagnosis tolerance: the dtype's (rtol, atol) times this


def holds(m, predicted, ctx):
    """Every element of `m` within the diagnosis tolerance of `predicted`, and `predicted` not
    within the dtype's tolerance of the reference (else it would explain nothing)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.shape != m.shape or not np.all(np.isfinite(predicted)) or not np.all(np.isfinite(m)):
        return False
    if compare(predicted, ctx.reference, ctx.rtol, ctx.atol).ok:
        return False
    rtol, atol = ctx.rtol * ctx.factor, ctx.atol * ctx.factor
    return bool(np.all(within(np.abs(m - predicted), np.abs(predicted), rtol, atol)))


def named(c, names, ctx):
    """The names among `names` ({name: value}) whose value is c (to the diagnosis tolerance)."""
    return [n for n, v in names.items() if abs(c - v) <= ctx.factor * (ctx.atol + ctx.rtol * abs(v))]


def share(mask, r):
    """Where `mask` holds, in words: the rows (first axis) it covers entirely, else its count."""
    k, n = int(mask.sum()), mask.size
    if mask.ndim >= 2:
        rows = mask.reshape(len(mask), -1)
        whole = rows.all(axis=1)
        if np.array_equal(rows, np.repeat(whole[:, None], rows.shape[1], axis=1)):
            return f"rows {np.flatnonzero(whole).tolist()} (index on the first axis)"
        cols = mask.reshape(len(mask), -1).all(axis=0)
        if mask.ndim == 2 and np.array_equal(mask, np.repeat(cols[None, :], len(mask), axis=0)):
            return f"columns {np.flatnonzero(cols).tolist()}"
    return f"{k} of {n} elements ({100.0 * k / n:.0f}%)"


# --- the relations, in the order they are tried ----------------------------------------------------

def zero(m, ctx):
    """m = 0 wherever the reference is not 0: everywhere, or on part (rows), equal elsewhere."""
    r = ctx.reference
    zeros = (np.abs(m) <= ctx.atol) & (np.abs(r) > ctx.atol)
    if not zeros.any():
        return None
    predicted = np.where(zeros, 0.0, r)
    if not holds(m, predicted, ctx):
        return None
    if zeros.sum() == np.count_nonzero(np.abs(r) > ctx.atol):
        return "zero where the reference is not (every element): never computed, or reset?"
    return f"zero where the reference is not on {share(zeros, r)}, equal to the reference elsewhere"


def transposed(m, ctx):
    """m = rᵀ, a square matrix."""
    r = ctx.reference
    if r.ndim == 2 and r.shape[0] == r.shape[1] and holds(m, r.T, ctx):
        return "the transpose of the reference (a square matrix: only the values can tell)"
    return None


def previous_iteration(m, ctx):
    """m = the reference's value one iteration back (a parameter: not updated)."""
    if ctx.previous is None or not holds(m, ctx.previous, ctx):
        return None
    if ctx.is_step:
        return "its value before this iteration's step: not updated"
    return f"the reference's value at the previous iteration ({ctx.iteration - 1}): one iteration late"


def moved_where_kept(m, ctx):
    """A parameter the reference's step leaves as it was (frozen), changed by the implementation."""
    if not ctx.is_step or ctx.previous is None or not np.array_equal(ctx.reference, ctx.previous):
        return None
    return "changed by the step where the reference keeps its value (a frozen parameter updated?)"


def next_iteration(m, ctx):
    """m = the reference's value one iteration forward."""
    if ctx.next is not None and holds(m, ctx.next, ctx):
        return f"the reference's value at the next iteration ({ctx.iteration + 1}): one iteration early"
    return None


def accumulated(m, ctx):
    """m = r + the previous iteration's r: accumulated across iterations."""
    if ctx.previous is None or ctx.is_step or not holds(m, ctx.reference + ctx.previous, ctx):
        return None
    return ("this iteration's reference plus the previous iteration's: accumulated across iterations"
            " (zero_grad missing?)")


def another_tensor(m, ctx):
    """m = the reference of another tensor of the same shape at this iteration."""
    for label, other in ctx.others.items():
        if holds(m, other, ctx):
            return f"the reference's {label} at this iteration"
    return None


def constant_factor(m, ctx):
    """m = c·r for one constant c (least squares), named when it is a known one."""
    r = ctx.reference
    for name, c in ctx.constants.items():  # a named constant first: exactly its value
        if holds(m, c * r, ctx):
            return f"{format_constant(c, named(c, ctx.constants, ctx))} × the reference"
    rr = float(np.sum(r * r))
    if rr == 0.0:
        return None
    c = float(np.sum(m * r)) / rr
    if holds(m, c * r, ctx):
        return f"{format_constant(c, [])} × the reference"
    return None


def step_factor(m, ctx):
    """A parameter's step c times the reference's: m = θ + c·(r − θ), θ its value before the step."""
    if not ctx.is_step or ctx.previous is None:
        return None
    p, d = ctx.previous, ctx.reference - ctx.previous
    for name, c in ctx.step_constants.items():
        if holds(m, p + c * d, ctx):
            return f"a step {format_constant(c, named(c, ctx.step_constants, ctx))} × the reference's, from the same value"
    dd = float(np.sum(d * d))
    if dd == 0.0:
        return None
    c = float(np.sum((m - p) * d)) / dd
    if holds(m, p + c * d, ctx):
        return f"a step {format_constant(c, [])} × the reference's, from the same value"
    return None


def sign_flipped_in_part(m, ctx):
    """m = −r on part of the elements, r on the rest."""
    r = ctx.reference
    flipped = (np.abs(m + r) < np.abs(m - r)) & (np.abs(r) > ctx.atol)
    if not flipped.any() or flipped.sum() == np.count_nonzero(np.abs(r) > ctx.atol):
        return None
    if holds(m, np.where(flipped, -r, r), ctx):
        return f"the reference with its sign flipped on {share(flipped, r)}"
    return None


RELATIONS = (zero, transposed, previous_iteration, moved_where_kept, next_iteration, accumulated, another_tensor,
             constant_factor, step_factor, sign_flipped_in_part)


PLAIN = ("2", "1/2", "−1")  # names that only repeat the number


def format_constant(c, names):
    """"4 (the batch size N = 4)", or "0.316228" for a constant without a name (more digits where
    six would round it to a plainer number than it is)."""
    names = [n for n in names if n not in PLAIN]
    text = f"{c:.6g}"
    if abs(float(text) - c) > 1e-9 * abs(c) and len(text.lstrip("-").replace(".", "").strip("0")) < 6:
        text = f"{c:.12g}"  # 1.00000058, not 1
    return text + (f" ({'; '.join(names)})" if names else "")


def diagnose(m, ctx):
    """The line of the first relation (RELATIONS, in order) that holds for the implementation's
    tensor `m` against `ctx`; "" when none does."""
    m = np.asarray(m, dtype=np.float64)
    ref = np.asarray(ctx.reference, dtype=np.float64)
    if m.shape != ref.shape or m.size == 0:
        return ""
    ctx.reference = ref
    ctx.previous = None if ctx.previous is None or np.shape(ctx.previous) != ref.shape else \
        np.asarray(ctx.previous, dtype=np.float64)
    ctx.next = None if ctx.next is None or np.shape(ctx.next) != ref.shape else np.asarray(ctx.next, dtype=np.float64)
    with np.errstate(all="ignore"):
        for relation in RELATIONS:
            line = relation(m, ctx)
            if line:
                return f"the implementation's tensor is {line}"
    return ""


def tensor_of(results, stage, name):
    """The tensor `name` of `stage` in one side's results of an iteration (train_step's dict), or
    None where it has none."""
    where = {"forward": ("forward", "states"), "delta": ("deltas", "grad_states"), "grad": ("grads",),
             "optim": ("optimizer_state",), "param": ("state_dict",), "buffer": ("state_dict",)}
    if results is None:
        return None
    if stage in ("output", "loss"):
        return results.get(stage)
    for key in where.get(stage, ()):
        if name in (results.get(key) or {}):
            return results[key][name]
    return None


# --- the context of a lockstep mismatch -----------------------------------------------------------

def explain(first, m, r, before, after, start, desc, skip=()):
    """The diagnosis line of the lockstep mismatch `first`: the implementation's results `m` and
    the reference's `r` at its iteration, the reference's at the iteration before (`before`; None
    at iteration 0, where `start`, the initial state dict, is a parameter's value before the step)
    and after (`after`, where the reference ran ahead; else None)."""
    mv, rv = tensor_of(m, first.stage, first.name), tensor_of(r, first.stage, first.name)
    if mv is None or rv is None:
        return ""
    rtol, atol, factor = diagnosis_tolerance(desc["run"]["dtype"])
    is_step = first.stage in ("param", "buffer")
    previous = tensor_of(before, first.stage, first.name)
    if previous is None and is_step and first.iteration == 0:
        previous = start.get(first.name)
    shape = np.shape(rv)
    others = {f"{s} {n!r}": v for s, n, _, v in pairs(m, r, skip)
              if (s, n) != (first.stage, first.name) and np.shape(v) == shape}
    per = schedule_period(desc)
    lrs = learning_rates(desc, first.iteration + per)
    ctx = Context(rv, rtol, atol, first.iteration, previous, tensor_of(after, first.stage, first.name), others,
                  constants(r, lrs[first.iteration]), step_constants(lrs, first.iteration, per), is_step, factor)
    return diagnose(mv, ctx)


def constants(r, lr):
    """The named constants a factor is compared with ({name: value}, 1 left out): 2, 1/2, −1, the
    batch size N, the number of outputs C per sample, N·C, the learning rate, and their inverses."""
    out = np.shape(r["output"])
    n, c = (out[0], int(np.prod(out[1:]))) if len(out) >= 1 else (1, 1)
    found = {"2": 2.0, "1/2": 0.5, "−1": -1.0, f"the batch size N = {n}": n, f"1/N = 1/{n}": 1.0 / n,
             f"the number of outputs C = {c}": c, f"1/C = 1/{c}": 1.0 / c, f"N·C = {n * c}": n * c,
             f"1/(N·C) = 1/{n * c}": 1.0 / (n * c), f"the learning rate lr = {lr:g}": lr}
    if lr:
        found[f"1/lr = {1 / lr:g}"] = 1.0 / lr
    return {name: float(v) for name, v in found.items() if v != 1}


def step_constants(lrs, it, per=1):
    """The named ratios a parameter's step is compared with: the learning rate (applied twice),
    −1 (a step uphill), 2, 1/2, and the schedule's rate one step of it late or early: one
    iteration, or one epoch of `per` iterations for a schedule stepped per epoch (lrs: the rate at
    every iteration, to it + per at least)."""
    found = {f"the learning rate lr = {lrs[it]:g}: lr applied twice?": lrs[it], "−1: a step uphill": -1.0,
             "2": 2.0, "1/2": 0.5}
    unit, t = ("iteration", it) if per == 1 else ("epoch", it // per)
    late = f"the schedule one {unit} late" if per == 1 else "the per-epoch schedule one epoch late"
    if it >= per and lrs[it] and lrs[it - per] != lrs[it]:
        found[f"lr at {unit} {t - 1} / lr at {t}: {late}"] = lrs[it - per] / lrs[it]
    if lrs[it] and lrs[it + per] != lrs[it]:
        found[f"lr at {unit} {t + 1} / lr at {t}: {late.replace('late', 'early')}"] = lrs[it + per] / lrs[it]
    return {name: float(v) for name, v in found.items() if v != 1}


def schedule_period(desc):
    """The iterations between two steps of the description's schedule: one, or an epoch's with
    interval = "epoch" (manual/schedules.py's iterations_per_epoch)."""
    if (desc.get("scheduler") or {}).get("interval") != "epoch":
        return 1
    return iterations_per_epoch(desc)


def learning_rates(desc, until):
    """The first parameter group's learning rate at iterations 0..until, torch's schedule replayed
    (per iteration, or per epoch as the twin's PerEpoch steps it) on a one-element optimizer (the description's lr throughout where it cannot be)."""
    import torch
    from ..twin.model import make_scheduler
    lr = float(desc["optimizer"].get("lr", 0.0) or 0.0)
    try:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        schedule = make_scheduler(opt, desc.get("scheduler"), desc)  # (desc: interval = "epoch")
        lrs = []
        for _ in range(until + 1):
            lrs.append(float(opt.param_groups[0]["lr"]))
            if schedule is not None:
                opt.step()
                schedule.step()
        return lrs
    except Exception:  # a schedule this replay cannot make: no named rate of another iteration
        return [lr] * (until + 1)
