"""The zoo: classic backprop mistakes, each a faulty implementation behind the plug-in interface,
each run in lockstep against the torch twin on a description chosen for it, each caught.

    backprop-check zoo [--json]

Every entry is a mistake of the registry (torch_ref/zoo/mistakes.py, `ZOO`): the manual engine built
with one component replaced by a faulty one, nothing else changed; the real engine is never
touched. An entry names where the oracle must catch it (iteration, stage, tensor, and for a
recurrent module's state the time step: "h at t = 3, layer 0, direction 0"); `run_zoo` checks
that it does.

The worked example's errata (torch_ref/example.py) are explained with this zoo: every entry that
applies to the worked example's network is tried on it, figure by figure.
"""
from dataclasses import dataclass

from .mistakes import ZOO, Mistake

# the zoo: the registry's mistakes shown to the user (torch_ref/zoo/mistakes.py), in the zoo's order
ENTRIES = ZOO


def entry(entry_id):
    for e in ENTRIES:
        if e.id == entry_id:
            return e
    raise KeyError(entry_id)


@dataclass
class Outcome:
    entry: Mistake
    caught: bool           # the oracle found a mismatch
    where: tuple | None    # (iteration, stage, tensor) of the first mismatch
    mismatch: object       # the Mismatch, or None

    @property
    def as_expected(self):
        return self.entry.caught_as_expected(self.mismatch)

    def to_json(self):
        e = self.entry
        return {
            "id": e.id, "mistake": e.what, "run_on": _first_line(e.description.__doc__),
            "expected": {"iteration": e.iteration, "stage": e.stage, "tensor": e.tensor, "at": e.at},
            "caught": self.caught,
            "caught_at": ({**dict(zip(("iteration", "stage", "tensor"), self.where)), "at": self.mismatch.at}
                          if self.where else None),
            "as_expected": self.as_expected,
            "mismatch": self.mismatch.to_json() if self.mismatch else None,
        }


def _first_line(doc):
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def run_entry(e):
    """Run one entry in lockstep against the torch twin on its own description."""
    from ..lockstep.run import lockstep
    desc = e.description()
    result = lockstep(desc, impl=e(desc), impl_name=f"zoo:{e.id}")
    m = result.first_mismatch
    where = (m.iteration, m.stage, m.name) if m else None
    return Outcome(e, m is not None, where, m)


def run_zoo(entries=None):
    return [run_entry(e) for e in (ENTRIES if entries is None else entries)]


def table(outcomes):
    """Two lines per mistake: where it was caught (and whether that is where it must be), then what it
    is; a third where it was caught in a state tensor: the time step."""
    lines = [f"{'id':<38} {'iteration':>9}  {'stage':<7} {'tensor':<32} verdict", "-" * 100]
    for o in outcomes:
        e = o.entry
        it, stage, tensor = o.where if o.where else ("-", "-", "not caught")
        if o.as_expected:
            verdict = "caught where expected"
        else:
            verdict = (f"{'CAUGHT' if o.caught else 'MISSED'}; expected iteration {e.iteration}, {e.stage}, "
                       f"{e.tensor}" + (f", {e.at}" if e.at else ""))
        lines.append(f"{e.id:<38} {it:>9}  {stage:<7} {tensor:<32} {verdict}")
        if o.mismatch is not None and o.mismatch.at:
            lines.append(f"    {o.mismatch.module}: {o.mismatch.at}")
        lines.append(f"    {e.what}  [on: {_first_line(e.description.__doc__)}]")
    n_ok = sum(o.as_expected for o in outcomes)
    lines += ["", f"{n_ok} / {len(outcomes)} mistakes caught where expected"]
    stages = sorted({o.where[1] for o in outcomes if o.where})
    lines.append(f"stages covered: {', '.join(stages)}")
    return "\n".join(lines)
