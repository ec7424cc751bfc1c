"""The fixed-tolerance rule of the lockstep: every element of every compared tensor within the
float type's tolerance (torch_ref/testing.py's table), compared through one flattened buffer per side;
and the per-iteration history a report keeps."""
import numpy as np

from ..testing import compare
from .states import is_state, locate
from .verdict import STAGES, Mismatch, pairs

_TINY = np.finfo(np.float64).tiny  # the relative difference's divisor when the reference is 0
# Elements per vectorised pass of the comparison: three float64 buffers of this length (3 MiB)
# stay in a core's cache.
BLOCK = 1 << 17
_MARGIN = 1 - 1e-9  # relative differences this far within rtol pass without the rule's own evaluation


class History:
    """What a report keeps of every iteration, in arrays allocated once (only when asked for):
    both losses, and per compared tensor its largest absolute and relative difference (NaN where
    not compared: after the first mismatch, or a stage the implementation does not report), and
    its largest error over the allowance (|manual - reference| / (atol + rtol * |reference|): the
    pass rule is <= 1). `keep(it, m, r)`, when set (the HTML page's recorder, torch_ref/html/),
    is called with both sides' results of every iteration compared, in order.

    Shadow mode (lockstep/shadow.py) judges a distance from the float64 shadow: there `abs` is the
    implementation's distance, `rel` that over the shadow's largest magnitude, `twin` the float32
    twin's distance (its largest so far) and `allowance` what the rule allowed; `over` is
    abs / allowance. Elsewhere `twin` and `allowance` are None."""

    def __init__(self, steps, keep=None):
        self.loss = np.full((steps, 2), np.nan)  # (steps, [manual, reference])
        self.keys, self.abs, self.rel = [], np.full((steps, 0), np.nan), np.full((steps, 0), np.nan)
        self.over = np.full((steps, 0), np.nan)
        self.twin = self.allowance = None
        self.keep = keep

    def layout(self, keys, shadow=False):
        self.keys = list(keys)  # (stage, tensor name) per column
        self.abs = np.full((len(self.loss), len(keys)), np.nan)
        self.rel = np.full((len(self.loss), len(keys)), np.nan)
        self.over = np.full((len(self.loss), len(keys)), np.nan)
        if shadow:
            self.twin = np.full((len(self.loss), len(keys)), np.nan)
            self.allowance = np.full((len(self.loss), len(keys)), np.nan)

    def add_column(self, key):
        """The column of `key` ((stage, tensor name)), appended after the layout's (NaN until
        written): a stage compared at some iterations only (eval). Returns its index."""
        if key not in self.keys:
            self.keys.append(key)
            self.abs = np.hstack([self.abs, np.full((len(self.loss), 1), np.nan)])
            self.rel = np.hstack([self.rel, np.full((len(self.loss), 1), np.nan)])
            self.over = np.hstack([self.over, np.full((len(self.loss), 1), np.nan)])
        return self.keys.index(key)


def per_stage(history):
    """Per stage, per iteration: the largest absolute and relative difference over the stage's
    tensors, and which tensor has the largest relative one (shadow mode: the largest error over
    the allowance, with that tensor's allowance, and the twin's largest distance). NaN where
    nothing was compared."""
    out = {}
    n = len(history.loss)
    shadow = history.allowance is not None
    for stage in STAGES:
        cols = [k for k, (s, _) in enumerate(history.keys) if s == stage]
        if not cols:
            continue
        a, r, o = history.abs[:, cols], history.rel[:, cols], history.over[:, cols]
        seen = ~np.all(np.isnan(r), axis=1)
        worst = np.zeros(n, dtype=int)
        worst[seen] = np.nanargmax((o if shadow else r)[seen], axis=1)
        with np.errstate(invalid="ignore"):
            top = lambda v: np.where(seen, np.nanmax(np.where(np.isnan(v), -np.inf, v), axis=1), np.nan)  # noqa: E731
            out[stage] = {"tensors": [history.keys[k][1] for k in cols], "max_abs_err": top(a),
                          "max_rel_err": top(r), "worst": np.where(seen, worst, -1), "over": top(o)}
            if shadow:
                out[stage]["twin_abs_err"] = top(history.twin[:, cols])
                out[stage]["allowance"] = np.where(seen, history.allowance[:, cols][np.arange(n), worst], np.nan)
    return out


class Checker:
    """Compares one iteration's results through a single flattened buffer per side.

    The layout (which tensor sits where) is fixed at the first iteration, so the hot loop does a
    dozen vectorised operations per call, whatever the number of tensors, and one call takes
    several iterations (check_many); each tensor's largest differences are reduced in the same
    passes. The detailed, per-element comparison runs only on the iteration and tensor that failed.
    """

    def __init__(self, m, r, rtol, atol, history=None, skip=()):
        self.rtol, self.atol, self.skip = rtol, atol, skip
        self.keys = [(stage, name) for stage, name, _, _ in pairs(m, r, skip)]
        self.size = sum(np.size(rv) for _, _, _, rv in pairs(m, r, skip))  # elements per iteration
        self.history = history
        if history is not None:
            history.layout(self.keys)
        self.starts = {}  # (elements per iteration, iterations) -> each tensor's start (_starts)
        self.buffers = {}  # length -> the comparison's three buffers (_buffers)
        self.max_abs = np.zeros(len(self.keys))  # per tensor, over the run so far
        self.max_rel = np.zeros(len(self.keys))
        self.compared = np.zeros(len(self.keys), dtype=bool)  # compared at least once

    def check_many(self, steps):
        """check() for consecutive iterations [(it, m, r), ...]: None if every element of every
        one is within tolerance, else the first Mismatch. Each run of iterations with one batch
        size is compared in vectorised passes over as many iterations as fit in BLOCK elements
        (the passes then work in the processor's cache rather than in memory); tensor by tensor
        only where such a pass fails."""
        start = 0
        per = max(1, BLOCK // max(1, self.size))  # iterations per vectorised pass
        for end in range(1, len(steps) + 1):
            if end < len(steps) and steps[end][2]["output"].shape == steps[start][2]["output"].shape:
                continue
            for i in range(start, end, per):
                part = steps[i:min(i + per, end)]
                if self._all_within(part):
                    continue
                for it, m, r in part:
                    first = self.check(it, m, r)
                    if first is not None:
                        return first
                # (none: NaN on both sides at the same place, torch.isclose's equal_nan, passes)
            start = end
        return None

    def _all_within(self, steps):
        """True if every element of these iterations passes; then the largest differences (and
        the history) are updated. False decides nothing: the caller looks tensor by tensor.

        The passes, each in place in a buffer kept for the length: |m - r| into the manual
        values' buffer, |r| into the reference's, the relative difference |m - r| / max(|r|, tiny)
        into a third; each tensor's largest of both (one reduceat each). A value whose relative
        difference is within rtol passes (then |m - r| <= rtol·|r| <= atol + rtol·|r|, the rule);
        the rule itself is evaluated on the others only."""
        n = len(steps)
        items = [p for _, m, r in steps for p in pairs(m, r, self.skip)]
        per = len(items) // n
        # (another iteration's tensors of other sizes make a concatenation of another length: it fails)
        a, e, t = self._buffers(n * sum(np.size(rv) for _, _, _, rv in items[:per]))
        try:
            np.concatenate([mv for _, _, mv, _ in items], axis=None, out=a)
            np.concatenate([rv for _, _, _, rv in items], axis=None, out=e)
        except (ValueError, TypeError):
            return False  # a wrongly shaped tensor, or values that are not real numbers
        starts = self._starts(e.size // n, n, items[:per])
        if starts is None:
            return False  # an empty tensor: the caller's element-wise comparison handles it
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            diff = np.abs(np.subtract(a, e, out=a), out=a)   # |manual − reference|
            scale = np.abs(e, out=e)                         # |reference|
            most_abs = np.maximum.reduceat(diff, starts).reshape(n, -1)  # (iterations, tensors); NaN propagates
            if not most_abs.max(initial=0.0) < np.inf:  # a NaN or an infinite difference
                return False
            rel = np.divide(diff, np.maximum(scale, _TINY, out=t), out=t)
            most_rel = np.maximum.reduceat(rel, starts).reshape(n, -1)
            if not most_rel.max(initial=0.0) <= self.rtol * _MARGIN:  # the rule itself where rel is over rtol
                over_rtol = np.flatnonzero(rel > self.rtol * _MARGIN)      # (usually a few: values near 0)
                if np.any(diff[over_rtol] > self.atol + self.rtol * scale[over_rtol]):
                    return False
            over = None
            if self.history is not None:
                over = np.maximum.reduceat(diff / (self.atol + self.rtol * scale), starts).reshape(n, -1)
        np.maximum(self.max_abs, most_abs.max(axis=0), out=self.max_abs)
        np.maximum(self.max_rel, most_rel.max(axis=0), out=self.max_rel)
        self.compared[:] = True  # (not only from iteration 0: a partial trace may start later)
        if self.history is not None:
            its = slice(steps[0][0], steps[-1][0] + 1)
            cols = slice(0, len(self.keys))  # (a column after them: the evaluation pass's, evaluation.py)
            self.history.abs[its, cols], self.history.rel[its, cols], self.history.over[its, cols] = most_abs, most_rel, over
        return True

    def _starts(self, size, n, items):
        """Where each tensor of each of n iterations of `size` elements starts in the concatenation
        (its tensors as in `items`, pairs()); None if a tensor is empty (reduceat cannot pass one)."""
        key = (size, n)
        if key not in self.starts:
            sizes = [np.size(rv) for _, _, _, rv in items]
            if len(sizes) != len(self.keys) or not all(sizes):
                return None
            one = np.cumsum([0] + sizes[:-1])
            self.starts[key] = np.concatenate([one + k * size for k in range(n)])
        return self.starts[key]

    def _buffers(self, length):
        """Three float64 buffers of `length` elements, kept from call to call for a length up to
        BLOCK (a fresh large array costs a page fault per 4 KiB at every call)."""
        if length > BLOCK:
            return np.empty(length), np.empty(length), np.empty(length)
        if length not in self.buffers:
            if len(self.buffers) >= 4:  # (a partial last batch, a partial pass: a few lengths at most)
                self.buffers.clear()
            self.buffers[length] = (np.empty(length), np.empty(length), np.empty(length))
        return self.buffers[length]

    def check(self, it, m, r):
        """None if every element of the iteration is within tolerance, else the first Mismatch."""
        if self._all_within([(it, m, r)]):
            return None
        passed = []
        for k, (stage, name, mv, rv) in enumerate(pairs(m, r, self.skip)):
            c = self._fold(it, k, mv, rv)
            if not c.ok:
                before = [s for s in passed if s != stage]
                if is_state(stage, name, r):
                    found = locate(stage, name, mv, rv, self.rtol, self.atol)
                    if found is not None:  # the first time step that goes wrong, as the computation visits them
                        s, index, at = found
                        return Mismatch(it, stage, name, index, s.manual, s.reference, s.abs_err, s.rel_err,
                                        self.atol, self.rtol, c.n_bad, c.numel, "", before, at=at)
                return Mismatch(it, stage, name, c.index, c.manual, c.reference, c.abs_err, c.rel_err,
                                self.atol, self.rtol, c.n_bad, c.numel, c.shape_error, before)
            if not passed or passed[-1] != stage:
                passed.append(stage)
        return None

    @staticmethod
    def explain(first, second):
        """The mismatch to report when the second opinion rejects too: its own (the step from the
        implementation's start, with the measured allowance); for a state tensor it names too, the
        first's, placed at its time step (lockstep/states.py), with the second's verdict as a note."""
        if first.at and (second.stage, second.name) == (first.stage, first.name):
            first.note = ("outside the measured rounding allowance of torch's step from the same start too"
                          f" (largest difference {second.abs_err:.3e} at index {second.index})")
            return first
        return second

    def absorb(self, it, m, r):
        """Fold every tensor of an iteration the second opinion passed into the run's largest
        differences (and the history), without judging it."""
        for k, (_, _, mv, rv) in enumerate(pairs(m, r, self.skip)):
            self._fold(it, k, mv, rv)

    def _fold(self, it, k, mv, rv):
        """Compare tensor k of iteration `it` element by element; fold its largest differences into
        the run's (and the history); return the Comparison."""
        c = compare(mv, rv, self.rtol, self.atol)
        self.compared[k] = True
        self.max_abs[k] = max(self.max_abs[k], c.max_abs_err)
        self.max_rel[k] = max(self.max_rel[k], c.max_rel_err)
        if self.history is not None and k < self.history.abs.shape[1]:
            self.history.abs[it, k], self.history.rel[it, k] = c.max_abs_err, c.max_rel_err
            self.history.over[it, k] = over_allowance(c, self.rtol, self.atol)
        return c

    def stats(self):
        """Per stage: the largest absolute and relative difference over the run, and where."""
        out = {}
        for stage in STAGES:
            ks = [k for k, (s, _) in enumerate(self.keys) if s == stage and self.compared[k]]
            if not ks:  # not reported, or never reached (a mismatch earlier at the first iteration)
                continue
            worst = max(ks, key=lambda k: self.max_rel[k])
            out[stage] = {"max_abs_err": float(self.max_abs[ks].max()),
                          "max_rel_err": float(self.max_rel[ks].max()),
                          "worst_tensor": self.keys[worst][1]}
        return out

    def not_reached(self):
        """The stages laid out but never compared: the run stopped before them at iteration 0."""
        return [stage for stage in STAGES
                if any(s == stage for s, _ in self.keys)
                and not any(self.compared[k] for k, (s, _) in enumerate(self.keys) if s == stage)]


def over_allowance(c, rtol, atol):
    """A Comparison's largest error over its allowance: its worst element's (the one it picks)."""
    if c.abs_err == 0:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return float(c.abs_err / (atol + rtol * abs(c.reference)))
