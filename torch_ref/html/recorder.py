"""What an HTML page keeps of a run's tensors: both sides' values of every compared tensor, at the
iterations a size budget allows (torch_ref/html/page.py writes them).

The recorder is the lockstep's `keep(it, m, r)` (lockstep(..., record=recorder)). It encodes each
iteration's tensors as it gets them (float32 values, one byte per element for the error over the
allowance) and holds no array of the run. A short run keeps every iteration. A long one keeps
the last `window` iterations (the run stops at its first mismatch, so these lead up to it and
include it) and one iteration every `every` (regular checkpoints), chosen from the budget and the
size of one iteration once the first is seen. A tensor of more than MAX_ELEMENTS elements is kept
as a summary only (shape, norms, worst element).
"""
import base64
import math
from collections import OrderedDict, deque

import numpy as np

from ..lockstep.shadow import s_value
from ..lockstep.verdict import pairs

MAX_ELEMENTS = 4096          # a larger tensor: summary only
TENSOR_BUDGET = 2_500_000    # characters of encoded tensors in the page (page.py's LIMIT holds the whole file)
FLOOR = -16                  # log10 of the smallest error over the allowance drawn (0 is drawn there)


def b64(array, dtype):
    """The array's bytes (little-endian `dtype`) in base64: what the page's script decodes."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def quantize(over):
    """Errors over the allowance as bytes: 0 not compared (NaN), 255 infinite, else 1 + 8 log10(v) - 8 FLOOR
    (an eighth of a decade; 1 for exact agreement and anything below 10^FLOOR). The page's decode is
    10^((q - 1) / 8 + FLOOR)."""
    over = np.asarray(over, dtype=np.float64)
    q = np.zeros(over.shape, dtype=np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log10(np.where(over > 0, over, 10.0 ** FLOOR))
    level = np.clip(np.round((lg - FLOOR) * 8) + 1, 1, 254)
    q[np.isfinite(over)] = level[np.isfinite(over)].astype(np.uint8)
    q[np.isinf(over)] = 255
    return q


def excess(mv, rv, rtol, atol):
    """Per element: |manual - reference| / (atol + rtol |reference|), as testing.compare judges it."""
    a, e = np.asarray(mv, dtype=np.float64), np.asarray(rv, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d = np.abs(a - e)
        same = (a == e) | (np.isnan(a) & np.isnan(e))
        out = d / (atol + rtol * np.abs(e))
    return np.where(same, 0.0, np.where(np.isnan(out), np.inf, out))


def distance(mv, sv, allowance):
    """Per element, shadow mode's ratio: |manual - shadow| / the tensor's allowance (shadow.py);
    NaN (not compared) for a tensor the rule did not judge (after the mismatch in its iteration)."""
    if np.isnan(allowance):
        return np.full(np.shape(sv), np.nan)
    return excess(mv, sv, 0.0, allowance)  # (atol: the allowance, rtol 0)


def tensor(stage, name, mv, rv, rtol, atol, sv=None, allowance=None):
    """One tensor of one iteration, as the page reads it. Shadow mode (`sv`, the float64 shadow's
    value, and the tensor's `allowance`): errors are the implementation's distance from the shadow
    over the allowance, the shadow's values kept beside both sides' ("s", float64)."""
    a, e = np.asarray(mv, dtype=np.float64), np.asarray(rv, dtype=np.float64)
    t = {"stage": stage, "name": name, "shape": list(e.shape)}
    if a.shape != e.shape:
        t["error"] = f"shape {list(a.shape)} where the reference has {list(e.shape)}"
        return t
    over = excess(a, e, rtol, atol) if sv is None else distance(a, sv, allowance)
    worst = int(np.argmax(over)) if over.size else 0
    with np.errstate(over="ignore", invalid="ignore"):
        t.update(norm=[float(np.linalg.norm(a)), float(np.linalg.norm(e))], numel=int(e.size),
                 worst=[int(i) for i in np.unravel_index(worst, e.shape)] if e.size else [],
                 worst_values=[float(a.flat[worst]), float(e.flat[worst])] if e.size else [],
                 over=float(over.flat[worst]) if e.size else 0.0, bad=int(np.count_nonzero(over > 1)))
    if e.size <= MAX_ELEMENTS:
        t.update(m=b64(a.ravel(), np.float32), r=b64(e.ravel(), np.float32), q=b64(quantize(over.ravel()), np.uint8))
    if sv is not None:
        t.update(allowance=float(allowance), shadow=float(np.ravel(sv)[worst]) if e.size else None)
        if e.size <= MAX_ELEMENTS:
            t["s"] = b64(np.ravel(sv), np.float64)
    return t


class Recorder:
    """lockstep's keep(it, m, r): the tensors of the iterations the budget allows. They are held as
    they came (the budget bounds them) and encoded once, when the page asks for `frames`. In shadow
    mode (r holds the shadow's results) each tensor also keeps the shadow's value and the allowance
    the rule gave it at that iteration, read from `history` (the run's lockstep.History, set by the
    lockstep before the first iteration)."""

    def __init__(self, steps, rtol, atol, skip=(), budget=TENSOR_BUDGET):
        self.steps, self.rtol, self.atol, self.skip, self.budget = steps, rtol, atol, skip, budget
        self.history = None
        self.checkpoints = {}  # iteration -> [(stage, name, manual, reference), ...]
        self.recent = deque()  # (iteration, items) of the last `window` iterations not checkpoints
        self.window = self.every = None
        self.frame_size = 0
        self.large = set()  # tensors kept as summaries only

    def __call__(self, it, m, r):
        items = [(s, n, np.array(mv), np.array(rv)) for s, n, mv, rv in pairs(m, r, self.skip)]
        if "shadow" in r:  # shadow mode: the shadow's value and the tensor's allowance
            items = [(s, n, mv, rv, np.array(s_value(r["shadow"], s, n)), self.history.allowance[it, k])
                     for k, (s, n, mv, rv) in enumerate(items)]
        if self.window is None:
            self.plan(self.encode(items))
        if it % self.every == 0:
            self.checkpoints[it] = items
        else:
            self.recent.append((it, items))  # the window: a deque of its length drops the oldest

    def encode(self, items):
        frame = [tensor(*item[:4], self.rtol, self.atol, *item[4:]) for item in items]
        self.large.update(f"{t['stage']} {t['name']}" for t in frame if "m" not in t and "error" not in t)
        return frame

    @property
    def frames(self):
        """{iteration: [tensor, ...]} of the iterations kept, encoded for the page."""
        return OrderedDict((it, self.encode(items)) for it, items in sorted(self.raw.items()))

    @property
    def raw(self):
        return {**self.checkpoints, **dict(self.recent)}

    def plan(self, frame):
        """Choose the window and the checkpoints' spacing from the size of one iteration."""
        self.frame_size = max(1, sum(sum(len(t.get(k, "")) for k in "mrqs") + 200 for t in frame))
        capacity = max(2, self.budget // self.frame_size)
        if capacity >= self.steps:
            self.window, self.every = self.steps, 1
        else:
            self.window = max(1, capacity // 2)
            self.every = max(2, math.ceil(self.steps / max(1, capacity - self.window)))
        self.recent = deque(maxlen=self.window)

    def policy(self):
        """In words, what the page holds of the tensors."""
        if self.every == 1 or self.every is None:
            kept = "every iteration's tensors"
        else:
            kept = (f"the tensors of {len(self.raw)} iterations: every {self.every}th and the last"
                    f" {self.window} before the run stopped (the rest: the summary series only)")
        if self.large:
            kept += (f"; tensors of more than {MAX_ELEMENTS} elements as summaries (shape, norms, worst"
                     f" element): {', '.join(sorted(self.large))}")
        return kept
