"""The data-parallel verdict: a Mismatch that also names the rank and a diagnosis, the result of a
run, and the per-stage comparison the checking rank keeps."""
from dataclasses import asdict, dataclass

from ..verdict import Mismatch
from ..testing import compare


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


class Stages:
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
