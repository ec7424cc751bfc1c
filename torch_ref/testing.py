"""One tolerance table, one comparison helper (as torch.testing keeps them).

An element passes when |manual − reference| <= atol + rtol · |reference|, torch.isclose's rule;
NaN or inf on one side only never passes. Relative difference is |manual − reference| / |reference|.
"""
from dataclasses import dataclass

import numpy as np

# Keyed by dtype. float64 is tight: a correct implementation differs from autograd only by the
# order of floating-point operations. float32 allows what a few hundred float32 roundings give.
TOLERANCES = {
    "float64": {"rtol": 1e-12, "atol": 1e-14},
    "float32": {"rtol": 1e-4, "atol": 1e-6},
    # Central finite differences (manual/finite_differences.py, float64) against an analytic gradient: with
    # h = eps^(1/3)·max(1, |p|) a difference is off by about eps^(2/3) ≈ 4e-11 times the scale of E
    # and its derivatives (measured: ≤ 1e-11 absolute on the specs here), so atol is multiplied by
    # max(1, |E|); a real backprop mistake is off by the size of the gradient itself.
    "finite-differences": {"rtol": 1e-6, "atol": 1e-8},
    # Free-running float32 against a float64 shadow (torch_ref/lockstep/shadow.py): a tensor passes when its
    # distance from the shadow is at most factor times the float32 twin's own (largest so far),
    # plus a floor atol + rtol * max|shadow| (rtol: about 8 float32 ulps) for the first iterations.
    "shadow": {"factor": 4.0, "rtol": 1e-6, "atol": 1e-7},
    # The second opinion on an element the row of its dtype rejects (torch_ref/lockstep/rounding.py): torch's
    # step re-run from the same start with every parameter, optimizer buffer and input perturbed by
    # ± magnitude · u · ξ (u the dtype's unit roundoff, ξ ~ U(−1, 1)), `pairs` antithetic pairs; the
    # element passes within factor × the largest distance of those steps from the float64 step.
    "rounding": {"factor": 4.0, "magnitude": 16.0, "pairs": 4},
    # The diagnosis under a mismatch (torch_ref/lockstep/diagnosis.py): a relation (m = c·r, m = rᵀ, ...)
    # holds when every element is within factor × the dtype's allowance of what it predicts (the
    # slack is the relation's own arithmetic: a fitted constant, a parameter minus its previous value).
    "diagnosis": {"factor": 16.0},
}


def tolerance(dtype):
    """(rtol, atol) for a dtype name, e.g. "float64"."""
    t = TOLERANCES[str(np.dtype(dtype))]
    return t["rtol"], t["atol"]


def shadow_tolerance():
    """(factor, rtol, atol) of the float64-shadow criterion."""
    t = TOLERANCES["shadow"]
    return t["factor"], t["rtol"], t["atol"]


def rounding_tolerance():
    """(factor, magnitude, pairs) of the measured rounding allowance (torch_ref/lockstep/rounding.py)."""
    t = TOLERANCES["rounding"]
    return t["factor"], t["magnitude"], int(t["pairs"])


def diagnosis_tolerance(dtype):
    """(rtol, atol, factor) of the diagnosis: the dtype's tolerance and the factor it is widened by."""
    rtol, atol = tolerance(dtype)
    return rtol, atol, TOLERANCES["diagnosis"]["factor"]


def fd_tolerance(dtype, loss):
    """(rtol, atol) for a gradient of `dtype` against finite differences of a loss of size |loss|:
    the finite-difference allowance, widened to the dtype's own where that is looser."""
    fd = TOLERANCES["finite-differences"]
    rtol, atol = tolerance(dtype)
    return max(rtol, fd["rtol"]), max(atol, fd["atol"] * max(1.0, abs(loss)))


@dataclass
class Comparison:
    """The outcome of comparing one tensor: where it is worst and by how much."""

    ok: bool
    index: tuple          # the element furthest outside its allowance (or the largest error)
    manual: float
    reference: float
    abs_err: float        # at `index`
    rel_err: float        # at `index`
    max_abs_err: float    # over the whole tensor
    max_rel_err: float
    n_bad: int
    numel: int
    shape_error: str = ""


def within(diff, scale, rtol, atol):
    """diff <= atol + rtol · scale, elementwise, for a finite diff only: an infinite difference is
    never within (against an infinite scale the inequality alone would hold), and NaN is not either.
    Equal infinities, whose difference is NaN, are the caller's to accept (compare does)."""
    return (diff <= atol + rtol * scale) & (diff < np.inf)


def compare(manual, reference, rtol, atol):
    """Compare two arrays of the same shape in float64; never raises on a mismatch."""
    a = np.asarray(manual, dtype=np.float64)
    e = np.asarray(reference, dtype=np.float64)
    if a.shape != e.shape:
        return Comparison(False, (), float("nan"), float("nan"), float("inf"), float("inf"),
                          float("inf"), float("inf"), e.size, e.size,
                          shape_error=f"shape {a.shape} where the reference has {e.shape}")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abs_err = np.abs(a - e)
        same = (a == e) | (np.isnan(a) & np.isnan(e))  # covers equal infinities and NaN = NaN
        abs_err = np.where(same, 0.0, np.where(np.isnan(abs_err), np.inf, abs_err))
        scale = np.abs(e)
        rel_err = np.where(abs_err == 0, 0.0, abs_err / scale)
        excess = abs_err / (atol + rtol * scale)  # > 1 where the element fails
        # a non-finite reference facing another value: inf / inf or inf / NaN is NaN, which would
        # compare as within tolerance; it fails, as a non-finite value of the implementation does
        excess = np.where(same, 0.0, np.where(np.isnan(excess), np.inf, excess))
    bad = excess > 1
    n_bad = int(np.count_nonzero(bad))
    flat = int(np.argmax(excess)) if excess.size else 0
    index = tuple(int(i) for i in np.unravel_index(flat, e.shape)) if e.size else ()
    pick = (lambda arr: float(arr[index])) if e.size else (lambda arr: 0.0)
    return Comparison(
        ok=n_bad == 0, index=index, manual=pick(a), reference=pick(e),
        abs_err=pick(abs_err), rel_err=pick(rel_err),
        max_abs_err=float(abs_err.max(initial=0.0)), max_rel_err=float(rel_err.max(initial=0.0)),
        n_bad=n_bad, numel=int(e.size),
    )
