"""What a lockstep run decides, shared by its set-ups (lockstep.py, shadow.py, distributed/), its
loop (loop.py) and the second opinion (rounding.py): the stages in the order the computation
produces them, the pairs of values compared at one iteration, and the verdict types (Mismatch,
Result, DataParallel, Rounding)."""
from dataclasses import asdict, dataclass, field

from ..errors import SpecError
from .states import owned

# forward (each module's output) and buffer (running statistics) exist for a network given as layers,
# eval (the evaluation pass's output, every k iterations, evaluation.py) for one with [run] eval_every
STAGES = ("forward", "output", "loss", "delta", "grad", "optim", "param", "buffer", "eval")


@dataclass
class Mismatch:
    iteration: int
    stage: str
    name: str
    index: tuple
    manual: float
    reference: float
    abs_err: float
    rel_err: float
    atol: float
    rtol: float
    n_bad: int = 1
    numel: int = 1
    detail: str = ""
    passed_before: list = field(default_factory=list)
    note: str = ""
    module: str = ""   # the module it belongs to, by state-dict prefix and type: "layers.1 (BatchNorm2d)"
    at: str = ""       # a state tensor's time step and element: "h at t = 7, layer 0, direction 0, sample 3, unit 5"
    diagnosis: str = ""  # how the implementation's tensor relates to the reference, one line (lockstep/diagnosis.py)
    reproduced_by: list = field(default_factory=list)  # the zoo's mistakes that give the same tensor (zoo/attribution.py)

    def __str__(self):
        where = f"index {self.index}" if self.index else "the value"
        lines = [
            f"lockstep mismatch at iteration {self.iteration}, stage {self.stage!r}, tensor {self.name!r}"
            + (f", module {self.module}" if self.module else "") + (f": {self.at}" if self.at else ""),
        ]
        if self.stage == "exception":  # the implementation raised; there are no values to show
            lines = [f"the implementation failed at iteration {self.iteration}: {self.detail}"]
            return "\n".join(lines)
        if self.detail:
            lines.append(f"  {self.detail}")
        else:
            lines += [
                f"  worst element at {where}: manual = {self.manual!r}, reference = {self.reference!r}",
                f"  absolute difference {self.abs_err:.3e}, relative difference {self.rel_err:.3e}"
                f" (allowed: atol {self.atol:g} + rtol {self.rtol:g} * |reference|)",
                f"  mismatched elements: {self.n_bad} / {self.numel}"
                f" ({100.0 * self.n_bad / max(self.numel, 1):.1f}%)",
            ]
        if self.note:
            lines.append(f"  {self.note}")
        passed = ", ".join(self.passed_before) if self.passed_before else "nothing yet"
        lines.append(f"  passed just before, at this iteration: {passed}")
        if self.diagnosis:
            lines.append(f"  diagnosis: {self.diagnosis}")
        if self.reproduced_by:
            also = f" (also: {', '.join(self.reproduced_by[1:])})" if len(self.reproduced_by) > 1 else ""
            lines.append(f"  this is what the zoo's `{self.reproduced_by[0]}` gives{also}")
        return "\n".join(lines)

    def to_json(self):
        d = asdict(self)
        d["index"] = list(self.index)
        return d


@dataclass
class Result:
    ok: bool
    steps_checked: int
    first_mismatch: Mismatch | None
    stats: dict        # stage -> {"max_abs_err", "max_rel_err", "worst_tensor"}
    dtype: str
    device: str
    mode: str
    final_loss: dict   # {"manual": float, "reference": float}
    not_reported: list = field(default_factory=list)  # stages the implementation does not report
    fd: object = None                                 # an FDCheck: the finite differences (--fd)
    impl: str = "manual"                              # which implementation was checked
    not_reached: list = field(default_factory=list)   # stages never compared (stopped before them)
    history: object = None                            # a lockstep.History: per iteration (record=True)
    rounding: dict = field(default_factory=dict)      # what the second opinion excused (Rounding.to_json)
    skipped: list = field(default_factory=list)       # stages left out on request (--skip-stage)
    parallel: object = None                           # a DataParallel: the data-parallel run's (--ranks)
    checked: dict = None  # a trace's (verify): {"iterations": [...], "of": steps, "stages": [...]}, traces/replay.py
    # {"manual": state_dict, "reference": state_dict} after the last iteration compared (not in to_json)
    final_state: dict = field(default=None, repr=False)

    def to_json(self):
        """The verdict as JSON; a data-parallel run's record adds its fields at the top level."""
        return {**self._json(), **(self.parallel.to_json() if self.parallel else {})}

    def _json(self):
        return {
            "ok": self.ok,
            "steps_checked": self.steps_checked,
            "first_mismatch": self.first_mismatch.to_json() if self.first_mismatch else None,
            "max_abs_err": {s: v["max_abs_err"] for s, v in self.stats.items()},
            "max_rel_err": {s: v["max_rel_err"] for s, v in self.stats.items()},
            "stats": self.stats,
            "dtype": self.dtype,
            "device": self.device,
            "mode": self.mode,
            "final_loss": self.final_loss,
            "impl": self.impl,
            "not_reported": self.not_reported,
            "not_reached": self.not_reached,
            "skipped": self.skipped,
            "fd": self.fd.to_json() if self.fd else None,
            "rounding": self.rounding,
            **({"checked": self.checked} if self.checked is not None else {}),
        }

    def summary(self):
        if self.parallel:
            return self.parallel.summary(self)
        head = (f"{'PASS' if self.ok else 'FAIL'}: {self.steps_checked} iteration(s) checked in lockstep"
                f" ({self.dtype}, {self.device}, {self.mode})")
        if self.checked is not None:  # a trace: the twin ran them all, the trace's were compared
            head = (f"{'PASS' if self.ok else 'FAIL'}: a trace replayed in lockstep over {self.steps_checked} iteration(s)"
                    f" ({self.dtype}, {self.device}, {self.mode})\n  {checked_line(self.checked)}")
        lines = [head, f"  {'stage':<7} {'max abs err':>12} {'max rel err':>12}  worst tensor"]
        if self.mode == "shadow":  # both sides' largest distance from the float64 shadow
            lines[1] = f"  {'stage':<7} {'manual→f64':>12} {'twin32→f64':>12}  worst tensor (nearest its allowance)"
        for s, v in self.stats.items():
            second = v["twin_abs_err"] if self.mode == "shadow" else v["max_rel_err"]
            lines.append(f"  {s:<7} {v['max_abs_err']:12.3e} {second:12.3e}  {v['worst_tensor']}")
        for s in self.not_reached:
            lines.append(f"  {s:<7} {'not reached':>12} {'':>12}  (the run stopped before comparing it)")
        for s in self.not_reported:
            lines.append(f"  {s:<7} {'not reported':>12} {'':>12}  (the implementation does not return it: not checked)")
        n = self.rounding.get("iterations", 0)
        if n:
            lines.append(f"  rounding: {n} iteration(s) outside the fixed tolerance were within the measured"
                         f" rounding allowance (first at iteration {self.rounding['first'][0]}); the twin was"
                         f" re-anchored on the implementation's state {self.rounding['reanchored']} time(s)")
        for s in self.skipped:
            lines.append(f"  {s:<7} {'skipped':>12} {'':>12}  (--skip-stage: not checked)")
        side = "manual" if self.impl == "manual" else "implementation"
        lines.append(f"  final loss: {side} {self.final_loss['manual']!r}, reference {self.final_loss['reference']!r}")
        if self.impl != "manual":
            lines.insert(1, f"  implementation: {self.impl}")
        if self.first_mismatch:
            lines.append(str(self.first_mismatch))
        if self.fd:
            lines.append(self.fd.summary())
        return "\n".join(lines)


@dataclass
class DataParallel:
    """What a data-parallel run (torch_ref/distributed/, --ranks) adds to its Result: R ranks, K
    micro-batches per step, the backend, the loss's reduction over samples ("sum" or "mean") and
    what was done about it (one sentence), whether every rank's parameters stayed bitwise equal to
    rank 0's, the case's label (the data-parallel zoo's id)."""

    ranks: int
    accumulate: int
    backend: str
    reduction: str
    scaling: str
    replicas_bitwise: bool
    label: str = ""

    def to_json(self):
        return asdict(self)

    def summary(self, result):
        """The report of a data-parallel Result."""
        head = (f"{'PASS' if result.ok else 'FAIL'}: {result.steps_checked} iteration(s) checked in lockstep,"
                f" DistributedDataParallel on {self.ranks} rank(s) ({self.backend}, {result.dtype}"
                f"{f', {self.accumulate} micro-batches per step' if self.accumulate > 1 else ''})"
                f" against the manual full-batch step")
        lines = [head, f"  {self.scaling}",
                 f"  {'stage':<15} {'max abs err':>12} {'max rel err':>12}  worst tensor"]
        for s, v in result.stats.items():
            lines.append(f"  {s:<15} {v['max_abs_err']:12.3e} {v['max_rel_err']:12.3e}  {v['worst_tensor']}")
        first = result.first_mismatch
        if self.accumulate > 1:
            once = not (first and first.stage == "sync")
            lines.append(f"  gradients all-reduced once per step (no_sync() in effect before the last micro-batch):"
                         f" {'yes' if once else 'no'}")
        lines.append(f"  parameters bitwise identical on every rank at every iteration checked:"
                     f" {'yes' if self.replicas_bitwise else 'no'}")
        lines.append(f"  final loss: manual {result.final_loss['manual']!r},"
                     f" reduced across ranks {result.final_loss['reference']!r}")
        if first:
            lines.append(str(first))
        return "\n".join(lines)


def skipped_stages(stages):
    """The set of stages to leave out (--skip-stage), each checked; SpecError naming --skip-stage
    for an unknown stage, or for all of them (a run that compares nothing certifies nothing)."""
    if isinstance(stages, str):
        stages = [stages]
    skip = set()
    for stage in stages or ():
        if stage not in STAGES:
            raise SpecError("--skip-stage", f"unknown stage {stage!r}; expected one of {list(STAGES)}")
        skip.add(stage)
    if skip >= set(STAGES) - {"forward", "buffer", "eval"}:  # (those exist for a layer list only)
        raise SpecError("--skip-stage", "every stage skipped: nothing would be compared")
    return skip


def diverged(it, loss, rtol, atol):
    """The reference itself left the finite numbers: NaN = NaN would "agree" from here on, and
    such agreement certifies nothing, so the run stops as a failure."""
    nan = float("nan")
    return Mismatch(it, "loss", "loss", (), nan, loss, nan, nan, atol, rtol, 1, 1,
                    f"the reference (torch) loss is {loss} at iteration {it}: the run diverged and nothing"
                    " after it can be checked (lower optimizer.lr, or fewer run.steps)")


def raised(it, failed, rtol, atol):
    """The implementation's own code raised, or ran out of time (a plugin.Failed): a failure of
    the implementation, reported in one line naming the call."""
    nan = float("nan")
    return Mismatch(it, "exception", failed.call, (), nan, nan, nan, nan, atol, rtol, 0, 0, failed.detail)


def pairs(m, r, skip=()):
    """(stage, name, manual value, reference value) in the order the computation makes them:
    each module's output (a layer list; a recurrent module's per-time-step states just before it),
    then deltas (each followed by its module's state gradients) and gradients from the last layer
    back to the first, as backprop produces them, so the first mismatch is nearest to its cause; the state
    dict's parameters, then its buffers (r["buffers"]: their names). Stages in `skip`
    (--skip-stage) are left out."""
    if skip:
        yield from (p for p in pairs(m, r) if p[0] not in skip)
        return
    states = r.get("states") if "states" in m else None  # a recurrent module's, before its output
    for name, ref in r["forward"].items() if "forward" in m and "forward" in r else ():  # optional, any subset
        for key in owned(states, name) if states else ():
            if key in m["states"]:
                yield "forward", key, m["states"][key], states[key]
        if name in m["forward"]:
            yield "forward", name, m["forward"][name], ref
    if "output" in m:  # output, loss, grads: NOT_EXPOSED by code that does not expose them (contract.py)
        yield "output", "output", m["output"], r["output"]
    if "loss" in m:
        yield "loss", "loss", m["loss"], r["loss"]
    grad_states = r.get("grad_states") if "grad_states" in m else None  # after the module's output delta
    for name, ref in reversed(r["deltas"].items() if "deltas" in m else ()):  # optional (a layer list's: any subset)
        if name in m["deltas"]:
            yield "delta", name, m["deltas"][name], ref
        for key in owned(grad_states, name) if grad_states else ():
            if key in m["grad_states"]:
                yield "delta", key, m["grad_states"][key], grad_states[key]
    for name, ref in reversed(r["grads"].items() if "grads" in m else ()):
        yield "grad", name, m["grads"][name], ref
    for name, ref in r.get("optimizer_state", {}).items() if "optimizer_state" in m else ():
        yield "optim", name, m["optimizer_state"][name], ref
    buffers = r.get("buffers", ())
    for name, ref in r["state_dict"].items():
        if name not in buffers:
            yield "param", name, m["state_dict"][name], ref
    for name in buffers:
        yield "buffer", name, m["state_dict"][name], r["state_dict"][name]


class Rounding:
    """What the second opinion excused in a run: iterations outside the fixed tolerance but within
    the measured rounding allowance, and (free mode) where the twin was re-anchored."""

    KEEP = 20  # iterations listed; the counts are exact

    def __init__(self):
        self.n_excused, self.first_excused, self.n_reanchored, self.used = 0, [], 0, 0.0

    def excused(self, it, used):
        self.n_excused += 1
        self.used = max(self.used, used)
        if len(self.first_excused) < self.KEEP:
            self.first_excused.append(it)

    def reanchored(self):
        self.n_reanchored += 1

    def to_json(self):
        return {"iterations": self.n_excused, "first": list(self.first_excused), "reanchored": self.n_reanchored,
                "largest_fraction_of_allowance": self.used}




def checked_line(checked):
    """A trace's record of what was compared, one line: "checked: iterations 0, 5, 10, ..., 95
    (20 of 100); stages output, loss, grad, param"."""
    its = checked["iterations"]
    shown = ", ".join(map(str, its)) if len(its) <= 6 else ", ".join(map(str, its[:3])) + f", ..., {its[-1]}"
    return (f"checked: iterations {shown or 'none'} ({len(its)} of {checked['of']}); "
            f"stages {', '.join(checked['stages']) or 'none'}")
