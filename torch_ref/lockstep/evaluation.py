"""The evaluation pass of a layer list ([run] eval_every = k, docs/lockstep.md).

After every k-th iteration's training step (iterations k − 1, 2k − 1, ...), before anything else
touches either side, both switch to eval mode (batch norm normalises with its running statistics,
dropout is the identity), compute the output on the held-out batch (manual/data.py's
holdout_batch: data.holdout's samples, or the training set's first batch) with no gradient and no
buffer update, and switch back to training mode. The two outputs are compared as stage "eval",
tensor "output", the last stage of that iteration, with the run's fixed tolerance.

A mistake that only eval mode shows (batch statistics where the running ones belong, dropout
applied in eval) leaves every training stage equal and is caught here, at the first evaluation.

An implementation without eval(x) (it is optional) skips the pass: the stage is "not reported".
The reference's eval pass is part of its step (re-run with it when the second opinion re-anchors
it), so the outputs compared are always those of the states the iteration ended in.
"""
from ..implementation.contract import eval_output
from ..testing import compare
from .checker import over_allowance
from .verdict import STAGES, Mismatch

NAME = "output"  # the tensor compared at stage eval


class Evaluation:
    """The evaluation pass every `every` iterations on the held-out inputs `x`, judged with the
    fixed tolerance (rtol, atol); `impl_evaluates`: whether the implementation has eval(x);
    `history` (checker.History, None for none): each pass's differences in a column of their own."""

    def __init__(self, every, x, rtol, atol, impl_evaluates, history=None):
        self.every, self.x, self.rtol, self.atol = every, x, rtol, atol
        self.impl_evaluates, self.history = impl_evaluates, history
        self.max_abs = self.max_rel = 0.0
        self.compared = 0  # evaluation passes compared and passed

    def due(self, it):
        """True after iteration `it` (0-based): every `every`-th iteration, the first at every − 1."""
        return (it + 1) % self.every == 0

    def reference(self, it, reference, r):
        """The reference's eval output into r["eval"] when due (`reference`: a Twin)."""
        if self.due(it):
            r["eval"] = reference.eval(self.x)
        return r

    def implementation(self, it, impl, m, r):
        """The implementation's eval output, checked against the reference's shape (ImplError
        otherwise), into m["eval"] when due and it has eval(x); plugin.Failed when it raises."""
        if self.due(it) and self.impl_evaluates and "eval" in r:
            m["eval"] = eval_output(it, impl.eval(self.x), r["eval"])

    def check(self, pending, until, passed):
        """The first eval Mismatch among `pending` [(it, x, y, m, r)] before iteration `until`
        (None: all of them), or None; the largest differences of those that pass are kept.
        `passed`: the stages compared before it at that iteration (all passed)."""
        for it, _, _, m, r in pending:
            if until is not None and it >= until:
                break
            if "eval" not in m or "eval" not in r:
                continue
            c = compare(m["eval"], r["eval"], self.rtol, self.atol)
            if self.history is not None:
                k = self.history.add_column(("eval", NAME))
                self.history.abs[it, k], self.history.rel[it, k] = c.max_abs_err, c.max_rel_err
                self.history.over[it, k] = over_allowance(c, self.rtol, self.atol)
            if not c.ok:
                return Mismatch(it, "eval", NAME, c.index, c.manual, c.reference, c.abs_err, c.rel_err, self.atol,
                                self.rtol, c.n_bad, c.numel, c.shape_error, list(passed))
            self.compared += 1
            self.max_abs, self.max_rel = max(self.max_abs, c.max_abs_err), max(self.max_rel, c.max_rel_err)
        return None

    def stats(self):
        """{"eval": the largest differences over the passes compared}, or {} before the first."""
        if not self.compared:
            return {}
        return {"eval": {"max_abs_err": float(self.max_abs), "max_rel_err": float(self.max_rel), "worst_tensor": NAME}}


def passed_stages(rule):
    """The stages a rule compares at every iteration, in STAGES order (what an eval mismatch
    passed before it at its iteration)."""
    laid_out = {stage for stage, _ in getattr(rule, "keys", ())}
    return [s for s in STAGES if s in laid_out]
