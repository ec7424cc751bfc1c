"""The lockstep cross-check: an implementation and the torch twin, step by step.

Both sides start from the same parameters and get the same batches. At every iteration the
results are compared in the order the computation produces them:

    output → loss → delta (dE/dnet per layer) → grad (per parameter) → param (after the update)

and the run stops at the first mismatch, which is reported with its iteration, stage, tensor,
worst index, both values and the tolerance. Two modes:

    free    both sides train on their own from the shared start (the default): a float64 check
            of the whole trajectory;
    resync  after every iteration the implementation restarts from the twin's updated
            parameters, so each step is judged on its own (long float32 runs).
"""
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

import manual.data
import manual.init
import manual.trainer

from .model import Twin
from .spec import SpecError
from .testing import compare, tolerance

STAGES = ("output", "loss", "delta", "grad", "param")
MODES = ("free", "resync")


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

    def __str__(self):
        where = f"index {self.index}" if self.index else "the value"
        lines = [
            f"lockstep mismatch at iteration {self.iteration}, stage {self.stage!r}, tensor {self.name!r}",
        ]
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
        passed = ", ".join(self.passed_before) if self.passed_before else "nothing yet"
        lines.append(f"  passed just before, at this iteration: {passed}")
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

    def to_json(self):
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
        }

    def summary(self):
        head = (f"{'PASS' if self.ok else 'FAIL'}: {self.steps_checked} iteration(s) checked in lockstep"
                f" ({self.dtype}, {self.device}, {self.mode})")
        lines = [head, f"  {'stage':<7} {'max abs err':>12} {'max rel err':>12}  worst tensor"]
        for s, v in self.stats.items():
            lines.append(f"  {s:<7} {v['max_abs_err']:12.3e} {v['max_rel_err']:12.3e}  {v['worst_tensor']}")
        lines.append(f"  final loss: manual {self.final_loss['manual']!r}, reference {self.final_loss['reference']!r}")
        if self.first_mismatch:
            lines.append(str(self.first_mismatch))
        return "\n".join(lines)


def prepare_device(device):
    """Check the device exists; on CUDA switch TF32 off so float32 means float32."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("run.device", "cuda requested but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def lockstep(desc, impl=None, mode="free"):
    """Run the cross-check described by `desc` (a parsed description). `impl` is any object with
    load_state_dict/train_step; by default the manual engine. Returns a `Result`."""
    if mode not in MODES:
        raise SpecError("mode", f"unknown lockstep mode {mode!r}; expected one of {list(MODES)}")
    run = desc["run"]
    prepare_device(run["device"])
    dtype = np.dtype(run["dtype"])
    rtol, atol = tolerance(dtype)
    impl = impl if impl is not None else manual.trainer.build(desc)
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    impl.load_state_dict(state)
    twin = Twin(desc, state)
    batches = manual.data.batches(desc, dtype)

    checker, first = None, None
    for it in range(run["steps"]):
        x, y = next(batches)
        m, r = impl.train_step(x, y), twin.train_step(x, y)
        checker = checker or Checker(m, r, rtol, atol)
        first = checker.check(it, m, r)
        if first is not None:
            break
        if mode == "resync":
            impl.load_state_dict(r["state_dict"])
    steps = it + 1 if first is None else it
    losses = {"manual": float(m["loss"]), "reference": r["loss"]}
    return Result(first is None, steps, first, checker.stats(), str(dtype), run["device"], mode, losses)


def _pairs(m, r):
    """(stage, name, manual value, reference value) in the order the computation makes them:
    deltas and gradients from the last layer back to the first, as backprop produces them, so the
    first mismatch is nearest to its cause."""
    yield "output", "output", m["output"], r["output"]
    yield "loss", "loss", m["loss"], r["loss"]
    for name, ref in reversed(r["deltas"].items()):
        yield "delta", name, m["deltas"][name], ref
    for name, ref in reversed(r["grads"].items()):
        yield "grad", name, m["grads"][name], ref
    for name, ref in r["state_dict"].items():
        yield "param", name, m["state_dict"][name], ref


class Checker:
    """Compares one iteration's results through a single flattened buffer per side.

    The layout (which tensor sits where) is fixed at the first iteration, so the hot loop does a
    handful of vectorised operations per iteration whatever the number of tensors; the detailed,
    per-element comparison runs only on the tensor that failed.
    """

    def __init__(self, m, r, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.keys = [(stage, name) for stage, name, _, _ in _pairs(m, r)]
        self.starts = {}  # total length -> where each tensor starts (a partial batch is shorter)
        self.max_abs = np.zeros(len(self.keys))  # per tensor, over the run so far
        self.max_rel = np.zeros(len(self.keys))

    def check(self, it, m, r):
        """None if every element of the iteration is within tolerance, else the first Mismatch."""
        pairs = list(_pairs(m, r))
        try:
            a = np.concatenate([np.ravel(mv) for _, _, mv, _ in pairs]).astype(np.float64, copy=False)
        except (ValueError, TypeError):
            a = None  # a wrongly shaped tensor: found below, tensor by tensor
        e = np.concatenate([np.ravel(rv) for _, _, _, rv in pairs]).astype(np.float64, copy=False)
        if a is not None and a.shape == e.shape:
            with np.errstate(invalid="ignore", over="ignore"):
                abs_err = np.abs(a - e)
                scale = np.abs(e)
                ok = abs_err <= self.atol + self.rtol * scale  # False for NaN
                rel_err = abs_err / np.maximum(scale, np.finfo(np.float64).tiny)
            if ok.all():
                starts = self.starts.get(e.size)
                if starts is None:
                    sizes = [np.size(rv) for _, _, _, rv in pairs]
                    starts = self.starts[e.size] = np.cumsum([0] + sizes[:-1])
                np.maximum(self.max_abs, np.maximum.reduceat(abs_err, starts), out=self.max_abs)
                np.maximum(self.max_rel, np.maximum.reduceat(rel_err, starts), out=self.max_rel)
                return None
        passed = []
        for k, (stage, name, mv, rv) in enumerate(pairs):
            c = compare(mv, rv, self.rtol, self.atol)
            self.max_abs[k] = max(self.max_abs[k], c.max_abs_err)
            self.max_rel[k] = max(self.max_rel[k], c.max_rel_err)
            if not c.ok:
                return Mismatch(it, stage, name, c.index, c.manual, c.reference, c.abs_err, c.rel_err,
                                self.atol, self.rtol, c.n_bad, c.numel, c.shape_error,
                                [s for s in passed if s != stage])
            if not passed or passed[-1] != stage:
                passed.append(stage)
        return None

    def stats(self):
        """Per stage: the largest absolute and relative difference over the run, and where."""
        out = {}
        for stage in STAGES:
            ks = [k for k, (s, _) in enumerate(self.keys) if s == stage]
            if not ks:
                continue
            worst = max(ks, key=lambda k: self.max_rel[k])
            out[stage] = {"max_abs_err": float(self.max_abs[ks].max()),
                          "max_rel_err": float(self.max_rel[ks].max()),
                          "worst_tensor": self.keys[worst][1]}
        return out
