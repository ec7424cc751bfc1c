"""The data-parallel mismatch: a lockstep Mismatch that also names the rank and a diagnosis. (A
data-parallel run's result is the lockstep's own verdict.Result, with its `parallel` record.)"""
from dataclasses import dataclass

from ..lockstep.verdict import Mismatch


@dataclass
class DistMismatch(Mismatch):
    """A lockstep Mismatch that also names the rank (None: every rank); its diagnosis (the
    Mismatch's field, shown by it) names the data-parallel mistake (distributed/diagnosis.py)."""

    rank: int | None = None
    cause: str = ""

    def __str__(self):
        lines = super().__str__().split("\n")
        if self.rank is not None:
            lines[0] += f", rank {self.rank}"
        return "\n".join(lines)
