"""The third opinion: gradients by central finite differences (manual/finite_differences.py, numpy, float64)
beside the implementation's and autograd's, for the first few iterations of a lockstep run. A
layer list's loss is differentiated as the iteration computed it: the same dropout masks, batch
norm in training mode (batch statistics), its running statistics left as the run has them.

A tensor of more than FD_SAMPLE elements is checked at FD_SAMPLE of them (finite differences of a
recurrent net, 2 forward passes per element, are the slowest part of a run): the same elements at
every iteration, drawn without replacement by numpy from the description's init.seed and the
tensor's place in the parameter order; every element where the description clips gradients (the
clipped differences need the whole gradient). The summary line says how many of how many.

For each parameter tensor, three comparisons: implementation vs autograd (the dtype's tolerance),
implementation vs finite differences and autograd vs finite differences (the finite-difference
tolerance, torch_ref/testing.py). Their pattern is the verdict:

    agree                    all three agree
    description suspect      implementation and autograd agree, finite differences do not: the loss
                             is not differentiable there (a ReLU at exactly 0, say) or too curved for
                             the step; look at the description, not at the code
    implementation wrong     autograd and finite differences agree, the implementation does not
    reference wrong          the implementation and finite differences agree, autograd does not
    no two agree
    borderline               two pairs agree and the third does not: a difference near a tolerance
"""
import numpy as np

from manual.finite_differences import central_differences

from ..errors import ImplError
from ..testing import compare, fd_tolerance, tolerance

FD_STEPS = 3  # iterations that get finite differences by default (--fd, the worked example)
FD_SAMPLE = 64  # elements checked of a larger tensor (every element of a smaller one)

PAIRS = (("impl", "autograd"), ("impl", "fd"), ("autograd", "fd"))
PAIR_NAMES = {p: f"{p[0]}_vs_{p[1]}" for p in PAIRS}
VERDICTS = {  # (impl~autograd, impl~fd, autograd~fd) -> verdict
    (True, True, True): "agree",
    (True, False, False): "description suspect",
    (False, False, True): "implementation wrong",
    (False, True, False): "reference wrong",
    (False, False, False): "no two agree",
}
EXPLAIN = {
    "description suspect": "the implementation and autograd agree with each other but NOT with finite "
                           "differences: this points at the description (a non-differentiable point, such "
                           "as a ReLU input at exactly 0, or a loss too curved for the step), not at the code",
    "implementation wrong": "autograd and finite differences agree; the implementation does not",
    "reference wrong": "the implementation and finite differences agree; autograd (the torch twin) does not",
    "no two agree": "no two of the three gradients agree",
    "borderline": "two comparisons agree and the third does not: a difference close to a tolerance",
}


class FDCheck:
    """Collects the three-way comparison, iteration by iteration, for the first `steps` iterations."""

    def __init__(self, desc, steps):
        self.desc, self.steps = desc, steps
        self.dtype = desc["run"]["dtype"]
        self.rows = []  # one per (iteration, tensor)
        self.passes = 0
        self.sampled = None  # {name: (flat indices, size)} of the tensors checked at some elements

    def sample(self, grads):
        """{name: (sorted flat indices, size)} of the tensors (of `grads`, in parameter order) with
        more than FD_SAMPLE elements: FD_SAMPLE of them drawn from init.seed and the tensor's
        place; {} where the description clips gradients."""
        if self.desc.get("clip"):
            return {}
        seed, out = self.desc["init"].get("seed", 0), {}  # (0 where the weights are given)
        for k, (name, g) in enumerate(grads.items()):
            size = int(np.asarray(g).size)
            if size > FD_SAMPLE:
                out[name] = np.sort(np.random.default_rng([seed, k]).choice(size, FD_SAMPLE, replace=False)), size
        return out

    def add(self, it, state, x, y, m, r, masks=None):
        """Finite differences at `state` (the parameters, and a layer list's buffers, before
        iteration `it`) on the batch (x, y), with the iteration's dropout keep-masks `masks`;
        compared with the implementation's result `m` and the twin's `r` (at the sampled elements
        of a large tensor). An implementation that does not expose its gradients (grads =
        NOT_EXPOSED) is refused (ImplError, exit 2): a third opinion without the first is no
        verdict on the code, and leaving them out would pass what was never compared."""
        if "grads" not in m:
            raise ImplError("--fd (fd_steps): the implementation does not expose its gradients (grads = "
                            "NOT_EXPOSED), so finite differences have nothing to judge: run without --fd")
        names = list(r["grads"])
        if self.sampled is None:
            self.sampled = self.sample(r["grads"])
        elements = {name: idx for name, (idx, _) in self.sampled.items()}
        fd, passes = central_differences(self.desc, state, x, y, names, masks, elements)
        self.passes += passes
        rtol, atol = tolerance(self.dtype)
        fd_rtol, fd_atol = fd_tolerance(self.dtype, r["loss"])
        for name in names:
            grads = {"impl": m["grads"][name], "autograd": r["grads"][name], "fd": fd[name]}
            shape = np.shape(grads["autograd"])
            if name in elements:  # the sampled elements only (fd holds those)
                grads = {k: (v if k == "fd" else np.asarray(v).reshape(-1)[elements[name]]) for k, v in grads.items()}
            row = {"iteration": it, "tensor": name}
            for a, b in PAIRS:
                tol = (rtol, atol) if b == "autograd" else (fd_rtol, fd_atol)
                c = compare(grads[a], grads[b], *tol)
                row[PAIR_NAMES[a, b]] = {
                    "ok": c.ok, "max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err,
                    "index": list(c.index), a: c.manual, b: c.reference, "rtol": tol[0], "atol": tol[1]}
            row["verdict"] = _verdict(row)
            # the three values where it is worst: the first failing comparison's worst element
            pair = next((PAIR_NAMES[p] for p in PAIRS if not row[PAIR_NAMES[p]]["ok"]), PAIR_NAMES["impl", "fd"])
            index = tuple(row[pair]["index"])
            row["worst"] = {"index": list(index), **{k: float(np.asarray(v, np.float64)[index])
                                                       for k, v in grads.items()}}
            if name in elements:  # indices into the tensor, not into the sample
                for pair_name in PAIR_NAMES.values():
                    row[pair_name]["index"] = _full(elements[name], row[pair_name]["index"], shape)
                row["worst"]["index"] = _full(elements[name], row["worst"]["index"], shape)
            self.rows.append(row)

    @property
    def ok(self):
        return all(row["verdict"] == "agree" for row in self.rows)

    def tensors(self):
        """Per tensor, over the iterations checked: the worst of each comparison and the verdict
        (the first iteration's that is not "agree", if any)."""
        out = {}
        for row in self.rows:
            t = out.setdefault(row["tensor"], {"verdict": "agree", "first_iteration": None})
            for pair in PAIR_NAMES.values():
                worst = t.setdefault(pair, {"ok": True, "max_abs_err": 0.0, "max_rel_err": 0.0})
                worst["ok"] = worst["ok"] and row[pair]["ok"]
                worst["max_abs_err"] = max(worst["max_abs_err"], row[pair]["max_abs_err"])
                worst["max_rel_err"] = max(worst["max_rel_err"], row[pair]["max_rel_err"])
            if row["verdict"] != "agree" and t["verdict"] == "agree":
                t["verdict"], t["first_iteration"], t["worst"] = row["verdict"], row["iteration"], row["worst"]
        return out

    def to_json(self):
        fd = {"rtol": fd_tolerance(self.dtype, 0.0)[0], "atol": fd_tolerance(self.dtype, 0.0)[1]}
        return {
            "ok": self.ok,
            "steps": self.steps,
            "iterations_checked": len({row["iteration"] for row in self.rows}),
            "forward_passes": self.passes,
            "sampled": {name: {"elements": len(idx), "of": size} for name, (idx, size) in (self.sampled or {}).items()},
            "tolerance": {"autograd": dict(zip(("rtol", "atol"), tolerance(self.dtype))),
                          "finite_differences": fd, "atol_scaled_by": "max(1, |loss|)"},
            "tensors": self.tensors(),
            "warnings": self.warnings(),
            "rows": self.rows,
        }

    def warnings(self):
        return [f"{name}: {t['verdict'].upper()} at iteration {t['first_iteration']}: {EXPLAIN[t['verdict']]}"
                f" (at index {tuple(t['worst']['index'])}: implementation {t['worst']['impl']!r}, autograd"
                f" {t['worst']['autograd']!r}, finite differences {t['worst']['fd']!r})"
                for name, t in self.tensors().items() if t["verdict"] != "agree"]

    def summary(self):
        n_it = len({row["iteration"] for row in self.rows})
        w = max([18, *(len(name) for name in self.tensors())])  # the tensor column: the longest name
        sampled = "".join(f"; {name}: {len(idx)} of {size} elements" for name, (idx, size) in (self.sampled or {}).items())
        lines = [f"finite differences (float64, central, h = eps^(1/3)*max(1,|p|)): {n_it} iteration(s),"
                 f" {self.passes} forward passes" + (f" (sampled, drawn from init.seed{sampled})" if sampled else "")
                 + "; largest relative difference per pair",
                 f"  {'tensor':<{w}} {'impl~autograd':>14} {'impl~fd':>10} {'autograd~fd':>12}  verdict"]
        for name, t in self.tensors().items():
            cells = [f"{t[p]['max_rel_err']:.1e}" + ("" if t[p]["ok"] else "!") for p in PAIR_NAMES.values()]
            lines.append(f"  {name:<{w}} {cells[0]:>14} {cells[1]:>10} {cells[2]:>12}  {t['verdict']}")
        warnings = self.warnings()
        if warnings:
            lines.append("  (! = outside the tolerance)")
        for w in warnings:
            lines.append(f"  !!! {w}")
        lines.append("  three-way verdict: " + ("all three agree" if self.ok else
                     "NOT AGREED (exit code 1 with --fd, even where the lockstep passed)"))
        return "\n".join(lines)


def _full(idx, k, shape):
    """The index into a tensor of `shape` of element k (a 1-tuple/list) of its sample `idx`."""
    return [int(i) for i in np.unravel_index(int(idx[k[0]]), shape)] if k else []


def _verdict(row):
    key = tuple(row[PAIR_NAMES[p]]["ok"] for p in PAIRS)
    return VERDICTS.get(key, "borderline")
