"""The data-parallel rule: how rank 0 judges one iteration of every rank's DDP step (gathered by
the reference, reference.py) against the manual engine's full-batch step, in the order of STAGES,
with the lockstep loop's rule interface (torch_ref/lockstep/loop.py): check_many, explain, absorb, stats,
not_reached, size."""
import numpy as np

from ..lockstep.checker import over_allowance
from ..testing import compare
from .diagnosis import diagnose
from .results import DistMismatch


class DataParallelRule:
    """Rank 0's comparisons for one run, and per stage the largest differences.

    r, the reference's result of one iteration: {"loss": the reduced loss, "ranks": [rank r's
    view], "plan": the shards, "batch": (x, y)}; a view holds that rank's loss, the fingerprints
    of its accumulated gradients before the last micro-batch ("marks"), its output and dE/dnet rows
    (its shards' rows, micro-batch by micro-batch), its gradients, optimizer state and parameters,
    all float64. A mismatch is diagnosed (diagnosis.py) from the evidence of that iteration and the
    manual engine's state before it."""

    ahead = 1  # the other ranks wait in a collective while rank 0 steps and compares: one iteration at a time

    def __init__(self, m, r, rtol, atol, desc, reduction, state0, history=None):
        self.rtol, self.atol, self.history = rtol, atol, history
        self.desc, self.reduction = desc, reduction
        self.pre = state0  # the manual engine's parameters before the iteration being judged
        self.replicas_bitwise = True
        self.stats_ = {}
        self.passed = []
        self.size = _numel(r["ranks"])  # elements per iteration, every rank's

    def check_many(self, steps):
        """None if every iteration of [(it, m, r), ...] passes, else the first DistMismatch."""
        for it, m, r in steps:
            first = self.check(it, m, r)
            if first is not None:
                return first
        return None

    def check(self, it, m, r):
        """None if the iteration passes, else its DistMismatch with cause and diagnosis."""
        views, plan = r["ranks"], r["plan"]
        first = self._compare(it, m, views, plan)
        if self.history is not None:
            r.update(gathered(m, views, plan, first))
        if first is None:
            self.pre = m["state_dict"]
            return None
        if first.stage == "replica":
            self.replicas_bitwise = False
            first.cause, first.diagnosis = "replica-drift", (
                f"rank {first.rank}'s {first.name} is no longer bitwise equal to rank 0's although every"
                f" compared value is within tolerance: the ranks updated differently (a rank-dependent"
                f" step, a non-deterministic kernel, or a write outside the optimizer)")
        else:
            K = len(plan)
            synced = next((k for k in range(K - 1)
                           if all(np.array_equal(v["marks"][k], views[0]["marks"][k]) for v in views)), None)
            x, y = r["batch"]
            first.cause, first.diagnosis = diagnose(self.desc, self.pre, x, y, plan, self.reduction,
                                                    [v["grads"] for v in views], synced)
        return first

    @staticmethod
    def explain(first, second):
        """(No second opinion runs in a data-parallel check.)"""
        return second

    def absorb(self, it, m, r):
        """(No second opinion runs in a data-parallel check: nothing is excused.)"""

    def stats(self):
        """Per stage: the largest absolute and relative difference over the run, and where."""
        return self.stats_

    def not_reached(self):
        return []

    def _compare(self, it, m, views, plan):
        """Rank 0's checks of one iteration, in the order of STAGES: the first DistMismatch or None."""
        self.passed = []
        R, K = len(plan[0]), len(plan)
        order = np.concatenate([np.arange(*plan[k][r]) for r in range(R) for k in range(K)])  # rank-major rows
        owner_of = np.empty(len(order), dtype=int)
        for r in range(R):
            for k in range(K):
                owner_of[np.arange(*plan[k][r])] = r

        def assemble(get):  # the ranks' rows back in batch order
            full = np.empty((len(order), get(views[0]).shape[1]))
            full[order] = np.concatenate([get(v) for v in views])
            return full

        checks = [("output", "output", m["output"], assemble(lambda v: v["output"]), None, owner_of)]
        checks.append(("loss", "loss", m["loss"], views[0]["loss"], 0, None))
        for l in reversed(range(len(views[0]["deltas"]))):
            checks.append(("delta", f"layers.{l}", m["deltas"][f"layers.{l}"],
                           assemble(lambda v: v["deltas"][l]), None, owner_of))
        for stage, name, mv, rv, rank, owner in checks:
            if bad := self._check(it, stage, name, mv, rv, rank, owner):
                return bad
        for r in range(1, R):
            if views[r]["loss"] != views[0]["loss"]:
                return self._fail(it, "loss", "loss", f"the reduced loss differs between ranks: rank 0 ="
                                  f" {views[0]['loss']!r}, rank {r} = {views[r]['loss']!r}", rank=r)
        for k in range(K - 1):
            if all(np.array_equal(v["marks"][k], views[0]["marks"][k]) for v in views):
                return self._fail(it, "sync", f"gradients after micro-batch {k}",
                                  f"already bitwise identical on all {R} ranks before the last micro-batch:"
                                  " they were all-reduced, no_sync() was not in effect")
        if K > 1:
            self._mark("sync")
        return self._every_rank(it, m, views) or self._replicas(it, views)

    def _every_rank(self, it, m, views):
        """Every rank's gradients, optimizer state and parameters against the manual full batch."""
        names = list(views[0]["grads"])
        for r, view in enumerate(views):
            for name in reversed(names):
                if name in m["grads"] and (bad := self._check(it, "grad", name, m["grads"][name],
                                                              view["grads"][name], r)):
                    return bad
        mo = m.get("optimizer_state", {})
        for r, view in enumerate(views):
            for name, rv in view["optimizer_state"].items():
                if name in mo and (bad := self._check(it, "optim", name, np.ravel(mo[name]), rv, r)):
                    return bad
        for r, view in enumerate(views):
            for name, rv in view["state_dict"].items():
                if bad := self._check(it, "param", name, m["state_dict"][name], rv, r):
                    return bad
        return None

    def _replicas(self, it, views):
        """Every rank's parameters and buffers bitwise equal to rank 0's; the first that is not."""
        for r in range(1, len(views)):
            for name, rv in views[r]["state_dict"].items():
                ref = views[0]["state_dict"][name]
                differ = rv.view(np.uint64) != ref.view(np.uint64)
                if differ.any():
                    i = tuple(int(j) for j in np.argwhere(differ)[0])
                    return self._fail(it, "replica", name,
                                      f"rank {r}'s copy is not bitwise equal to rank 0's: {int(differ.sum())} /"
                                      f" {differ.size} element(s) differ; at index {i}: rank 0 = {ref[i]!r},"
                                      f" rank {r} = {rv[i]!r}", rank=r)
        self._mark("replica")
        return None

    def _check(self, it, stage, name, manual_value, reference, rank=None, owner=None):
        """None if within tolerance, else the DistMismatch. `owner[row]` names the rank of a row."""
        c = compare(manual_value, reference, self.rtol, self.atol)
        if self.history is not None:
            self._record(it, stage, name, c)
        s = self.stats_.setdefault(stage, {"max_abs_err": 0.0, "max_rel_err": 0.0, "worst_tensor": name})
        s["max_abs_err"] = max(s["max_abs_err"], c.max_abs_err)
        if c.max_rel_err > s["max_rel_err"]:
            s["max_rel_err"], s["worst_tensor"] = c.max_rel_err, name
        if c.ok:
            self._mark(stage)
            return None
        if owner is not None and c.index:
            rank = int(owner[c.index[0]])
        return DistMismatch(it, stage, name, c.index, c.manual, c.reference, c.abs_err, c.rel_err,
                            self.atol, self.rtol, c.n_bad, c.numel, c.shape_error,
                            [p for p in self.passed if p != stage], rank=rank)

    def _record(self, it, stage, name, c):
        """Fold one comparison into the history: per tensor, the largest over the ranks compared."""
        h, k = self.history, self.history.add_column((stage, name))
        for part, v in ((h.abs, c.max_abs_err), (h.rel, c.max_rel_err), (h.over, over_allowance(c, self.rtol, self.atol))):
            part[it, k] = np.fmax(part[it, k], v)

    def _mark(self, stage):
        if not self.passed or self.passed[-1] != stage:
            self.passed.append(stage)

    def _fail(self, it, stage, name, detail, rank=None):
        nan = float("nan")
        return DistMismatch(it, stage, name, (), nan, nan, nan, nan, self.atol, self.rtol, detail=detail,
                            passed_before=[p for p in self.passed if p != stage], rank=rank)


def gathered(m, views, plan, first=None):
    """Rank 0's gathered reference of one iteration in the twin's layout (what lockstep's pairs()
    reads, for the page's tensors): the ranks' outputs and dE/dnet rows put back in batch order,
    the reduced loss, and the gradients, optimizer state and parameters of rank 0, or of the rank
    a mismatch of those stages names."""
    R, K = len(plan[0]), len(plan)
    order = np.concatenate([np.arange(*plan[k][r]) for r in range(R) for k in range(K)])

    def assemble(rows):
        full = np.empty((len(order),) + np.shape(rows[0])[1:])
        full[order] = np.concatenate(rows)
        return full
    own = views[first.rank] if first is not None and first.rank is not None and first.stage in (
        "grad", "optim", "param") else views[0]
    mo = m.get("optimizer_state", {})
    return {"output": assemble([v["output"] for v in views]),
            "deltas": {f"layers.{l}": assemble([v["deltas"][l] for v in views]) for l in range(len(views[0]["deltas"]))},
            "grads": own["grads"], "state_dict": own["state_dict"],
            "optimizer_state": {n: v.reshape(np.shape(mo[n])) for n, v in own["optimizer_state"].items() if n in mo}}


def _numel(tree):
    """The number of values in nested lists and dicts of arrays and numbers."""
    if isinstance(tree, dict):
        return sum(_numel(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_numel(v) for v in tree)
    return int(np.size(tree))
