"""The second opinion: is a difference that the fixed tolerance rejects explained by rounding?

A fixed atol/rtol cannot judge every element of a float32 (or long float64) run: an output that is
the difference of larger terms carries the rounding of those terms, not its own; a pre-activation
within rounding of a kink (relu, leaky_relu, a clipping threshold) takes either branch, and the
delta then differs by the slope ratio; Adam's m/(√v + ε) amplifies a gradient's rounding where
|g| is near ε; and a free run compounds rounding until the two trajectories part. None of these is
a bug, and none is a fixed multiple of |reference|. So when the fixed tolerance rejects an element,
the step that produced it is measured:

    start   the state the implementation started this iteration from (parameters, optimizer
            state, the schedule's position; in a [run] stateful run the state each recurrent
            module carried in, from the implementation's per-time-step states of the batch
            before), and the iteration's batch (data: never perturbed)
    truth   torch's step from that start, in float64 (float32 runs), or in the run's dtype
    spread  per element, the largest |r_k − truth| over 2·PAIRS steps of torch in the run's dtype
            from the start perturbed element-wise, v·(1 ± MAGNITUDE·u·ξ), ξ ~ U(−1, 1), and with
            every pre-activation, activation and activation slope perturbed alike (_InPlace),
            u the dtype's unit roundoff (antithetic pairs: a kink within reach is crossed by one
            side of a pair), and the unperturbed step in the run's dtype
    pass    |manual − truth| ≤ FACTOR · spread + atol + rtol · |truth|

Perturbing every parameter and input by a few units of rounding moves every product term, and so
every sum, as the implementation's own rounding does, with the condition of the computation built
in: the spread is large exactly where the step is sensitive (cancellation, kinks, ε), and about
MAGNITUDE·u·(Σ|terms|) elsewhere, far below any real backprop mistake (a wrong formula is off by
the size of the quantity). FACTOR, MAGNITUDE and PAIRS are in the one tolerance table
(TOLERANCES["rounding"], torch_ref/testing.py). The perturbations are drawn from fixed seeds:
the same run gives the same verdict and the same report.
"""
import numpy as np
import torch

import manual.init

from ..twin.model import Twin
from ..testing import rounding_tolerance, tolerance, within
from .verdict import Mismatch, pairs


class Start:
    """Where an iteration starts: parameters, optimizer state ({} before the first step, None when
    unknown), the schedule's state (torch's scheduler.state_dict(), None without a schedule), and,
    in a stateful run, `carried`: the per-time-step states ({"layers.1.h": (L, D, T, N, H), ...})
    of the batch before, whose final states the recurrent modules carry in (None: zeros)."""

    def __init__(self, state, optimizer_state, schedule, carried=None):
        self.state, self.optimizer_state, self.schedule = state, optimizer_state, schedule
        self.carried = carried


def start_of(mode, start0, prev, impl, carried_keys=None):
    """Where the implementation started the iteration after `prev` ((it, x, y, m, r), None for
    iteration 0): the twin's state in resync mode, the implementation's own in free mode; in a
    stateful run (`carried_keys`: the state keys its recurrent modules carry) the state the
    implementation carried in, its own in either mode (a resync loads parameters only). None
    when that cannot be known (a stateful optimizer whose state the implementation does not
    report, or a carried state whose per-time-step states it does not report)."""
    if prev is None:
        return start0
    _, _, _, m, r = prev
    carried = None
    if carried_keys:
        states = m.get("states") or {}
        if any(k not in states for k in carried_keys):
            return None
        carried = {k: states[k] for k in carried_keys}
    twin_opt = r.get("optimizer_state", {})
    if mode == "resync":
        state = r["state_dict"]
        opt = twin_opt if impl.loads_optimizer_state else m.get("optimizer_state")
    else:
        state, opt = m["state_dict"], m.get("optimizer_state")
    if opt is None:
        opt = {} if not twin_opt else None
    return None if opt is None else Start(state, opt, r.get("schedule"), carried)


class SecondOpinion:
    """Re-runs one training step from a given start to measure each element's rounding allowance."""

    def __init__(self, desc, skip=(), masks=None):
        self.desc, self.skip, self.masks = desc, skip, masks
        # binary cross-entropy takes probabilities: the network's output stays within [0, 1]
        last = len(desc["network"]["sizes"]) - 2
        self.keep = {last} if desc["network"]["loss"] == "bce" else set()
        net = desc["network"]
        # A layer list's twin has no per-activation hook: its ensemble perturbs the start (parameters,
        # buffers, optimizer state) only, which moves every sum and cancellation but no kink or slope.
        self.perturbs = "layers" not in net
        acts = net.get("activation", [])
        args = net.get("activation_args") or [{} for _ in acts]
        self.slope_terms = [_slope_terms(a, g) for a, g in zip(acts, args)]
        self.value_terms = [_value_terms(a, g) for a, g in zip(acts, args)]
        self.dtype = desc["run"]["dtype"]
        self.rtol, self.atol = tolerance(self.dtype)
        self.factor, self.magnitude, self.pairs = rounding_tolerance()
        self.u = float(np.finfo(self.dtype).eps) / 2
        self._twins = {}
        # [run] stateful: the state keys the recurrent modules carry into each batch (part of a Start)
        self.carried_keys = None
        if desc["run"].get("stateful"):
            model = self._twin("float64", Start(manual.init.initial_state(desc), {}, None)).model
            self.carried_keys = [f"{name}.{key}" for name, mod in model.recurrent.items()
                                 for key in (("h", "c") if mod.mode == "LSTM" else ("h",))]

    def _twin(self, dtype, start):
        """A twin of `dtype` restored to `start` (one per dtype, reused)."""
        twin = self._twins.get(dtype)
        if twin is None:
            twin = self._twins[dtype] = Twin(self.desc, start.state, dtype=dtype)
        twin.restore(start.state, start.optimizer_state, start.schedule, start.carried)
        return twin

    def steps(self, start, x, y, it=0):
        """(truth, [results of the ensemble]) of one step (iteration `it`'s) from `start` on (x, y)."""
        wide = "float64"
        kw = {} if self.masks is None else {"masks": self.masks(it, x)}  # the iteration's dropout masks
        truth = self._twin(wide, _cast(start, np.float64)).train_step(_as(x, np.float64), _as(y, np.float64), **kw)
        ensemble = [] if self.dtype == wide else [self._twin(self.dtype, start).train_step(x, y, **kw)]
        for k in range(self.pairs):
            rng = np.random.default_rng(k)
            noise = {}  # one ξ per tensor, the same for both sides of the pair
            for sign in (1.0, -1.0):
                eps = sign * self.magnitude * self.u
                s = _perturbed(start, eps, rng, noise, self.dtype)
                twin = self._twin(self.dtype, s)
                if self.perturbs:
                    twin.model.perturb = _InPlace(eps, rng, noise, self.keep, self.slope_terms, self.value_terms)
                try:
                    ensemble.append(twin.train_step(x, y, **kw))  # the batch is data, the same on both sides
                finally:
                    twin.model.perturb = None
        return truth, ensemble

    def judge(self, it, start, x, y, m, r):
        """None if every element of iteration `it` is within tolerance of the lockstep reference `r`
        or within the measured rounding allowance of torch's step from `start`; else a Mismatch.
        `self.used` is then the largest fraction of its allowance an element needed (≤ 1 on a pass)."""
        truth, ensemble = self.steps(start, x, y, it)
        passed, self.used = [], 0.0
        sk = self.skip
        for (stage, name, mv, rv), (_, _, _, tv), *others in zip(pairs(m, r, sk), pairs(m, truth, sk),
                                                                *(pairs(m, e, sk) for e in ensemble)):
            a, ref, tru = (np.asarray(v, dtype=np.float64) for v in (mv, rv, tv))
            if a.shape != tru.shape:  # (the contract check refuses this first; never excused)
                return Mismatch(it, stage, name, (), float("nan"), float("nan"), float("inf"), float("inf"),
                                self.atol, self.rtol, int(tru.size), int(tru.size),
                                f"shape {a.shape} where the reference has {tru.shape}",
                                [s for s in passed if s != stage])
            with np.errstate(invalid="ignore", over="ignore"):
                spread = np.zeros(tru.shape)
                for (_, _, _, ev) in others:
                    np.fmax(spread, np.abs(np.asarray(ev, dtype=np.float64) - tru), out=spread)
                allowed = self.factor * spread + self.atol + self.rtol * np.abs(tru)
                err = np.abs(a - tru)
                fixed = within(np.abs(a - ref), np.abs(ref), self.rtol, self.atol)
                ok = ((err <= allowed) & (err < np.inf)) | fixed | (a == tru)
                if not fixed.all():
                    self.used = max(self.used, float(np.nanmax(np.where(fixed, 0.0, err / allowed))))
            if not ok.all():
                excess = np.where(ok, 0.0, np.where(np.isnan(err), np.inf, err / allowed))
                flat = int(np.argmax(excess))
                index = tuple(int(i) for i in np.unravel_index(flat, tru.shape)) if tru.ndim else ()
                mval, tval = float(a[index]), float(tru[index])
                e = float(err[index])
                side = "float64" if self.dtype != "float64" else self.dtype
                detail = "\n  ".join([
                    f"worst element at {'index ' + str(index) if index else 'the value'}: manual = {mval!r}, "
                    f"reference = {tval!r} (torch's step from the same start, in {side})",
                    f"absolute difference {e:.3e}, relative difference {e / max(abs(tval), 1e-300):.3e}; allowed: "
                    f"atol {self.atol:g} + rtol {self.rtol:g} * |reference| + {self.factor:g} * the measured rounding "
                    f"spread {float(spread[index]):.3e} = {float(allowed[index]):.3e}",
                    f"mismatched elements: {int((~ok).sum())} / {ok.size} (outside both the fixed tolerance and "
                    f"the rounding allowance)",
                ])
                return Mismatch(it, stage, name, index, mval, tval, e, e / max(abs(tval), 1e-300), self.atol,
                                self.rtol, int((~ok).sum()), int(ok.size), detail,
                                [s for s in passed if s != stage])
            if not passed or passed[-1] != stage:
                passed.append(stage)
        return None


def _as(a, dtype):
    a = np.asarray(a)
    return a if a.dtype.kind in "iu" else a.astype(dtype)


def _cast(start, dtype):
    return Start({k: np.asarray(v, dtype=dtype) for k, v in start.state.items()},
                 None if start.optimizer_state is None else
                 {k: np.asarray(v, dtype=dtype) for k, v in start.optimizer_state.items()},
                 start.schedule,
                 None if start.carried is None else {k: np.asarray(v, dtype=dtype) for k, v in start.carried.items()})


def _perturb(a, eps, rng, noise, key):
    """a · (1 + eps · ξ), ξ ~ U(−1, 1) drawn once per key; integer arrays (step counters) unchanged."""
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return a
    if key not in noise:
        noise[key] = rng.uniform(-1.0, 1.0, a.shape)
    return a.astype(np.float64) * (1.0 + eps * noise[key])


def _value_terms(name, args):
    """terms(z, a): the size of the largest term in the usual formula for the activation's value
    a = f(z): |a| (relative rounding) in general; |z| more for the forms z·g(z) (gelu's ½z(1 + erf),
    ½z(1 + tanh v), silu's zσ(z)), whose value in the tails is a difference of terms of size |z|;
    α more for elu's α(eᶻ − 1)."""
    if name in ("gelu", "silu"):
        return lambda z, a: a.abs() + z.abs()
    if name == "elu":
        alpha = args.get("alpha", 1.0)
        return lambda z, a: a.abs() + abs(alpha)
    return lambda z, a: a.abs()


def _slope_terms(name, args):
    """terms(z): the size of the largest term in the usual formula for the activation's slope f'(z),
    to which its rounding is proportional: 1 + |z| in general (σ + zσ(1 − σ) for silu, eˣ for elu,
    1 − tanh², Φ + zφ), and for gelu's tanh form ½(1 + tanh v) + ½ z (1 − tanh² v) v'(z), whose
    second term grows like |z|³ while the slope itself tends to 0 or 1."""
    if name == "gelu" and args.get("approximate") == "tanh":
        c = (2.0 / np.pi) ** 0.5
        return lambda z: 1.0 + 0.5 * z.abs() * c * (1.0 + 3 * 0.044715 * z * z)
    return lambda z: 1.0 + z.abs()


class _InPlace:
    """The noise a perturbed twin puts into its forward pass (MLP.perturb), in place, through
    .data, so that what autograd saved for the backward pass carries it too (tanh's and sigmoid's
    derivatives are taken from their output, 1 − a², a(1 − a): near saturation those are
    differences of nearly equal numbers, whose rounding perturbing the parameters alone does not
    move):

    - every pre-activation is scaled by 1 ± magnitude·u·ξ;
    - every activation moves by ± magnitude·u·terms, the size of the terms of its formula
      (_value_terms), except the output of a network whose loss takes probabilities (`keep`);
    - every activation's slope f'(z) gets an absolute ± magnitude·u·terms(z), terms(z) the size of
      the largest term of its usual formula (_slope_terms): a slope is only ever computed to a few
      units of rounding of its terms, however small it is in the tails (1 − tanh², Φ(z) + z·φ(z)
      from ½(1 + erf), the tanh form of gelu).
    """

    def __init__(self, eps, rng, noise, keep, slope_terms, value_terms):
        self.eps, self.rng, self.noise, self.keep = eps, rng, noise, keep
        self.slope_terms, self.value_terms = slope_terms, value_terms

    def _xi(self, t, key):
        """ξ ~ U(−1, 1) of t's shape, drawn once per key (the same for both sides of a pair)."""
        if key not in self.noise:
            self.noise[key] = self.rng.uniform(-1.0, 1.0, tuple(t.shape))
        return torch.as_tensor(self.noise[key], dtype=t.dtype, device=t.device)

    def pre_activation(self, k, net):
        """Layer k's net = x @ W.T + b, scaled in place."""
        net.data.mul_(1.0 + self.eps * self._xi(net, ("net", k)))

    def activation(self, k, net, a):
        """Layer k's activation a = f(net), moved in place; returned with its slope moved too
        (a + (net − net) · noise: the same value, the slope f' + noise)."""
        z = net.detach()
        if k not in self.keep:
            a.data.add_(self.eps * self._xi(a, ("act", k)) * self.value_terms[k](z, a.detach()))
        return a + (net - z) * (self.eps * self._xi(net, ("slope", k)) * self.slope_terms[k](z))


def _perturbed(start, eps, rng, noise, dtype):
    state = {k: _perturb(v, eps, rng, noise, "p:" + k).astype(dtype) for k, v in start.state.items()}
    opt = start.optimizer_state
    if opt is not None:
        opt = {k: (np.asarray(v) if k.endswith(".step") else _perturb(v, eps, rng, noise, "o:" + k).astype(dtype))
               for k, v in opt.items()}
    carried = start.carried  # the carried state is perturbed as the parameters are
    if carried is not None:
        carried = {k: _perturb(v, eps, rng, noise, "s:" + k).astype(dtype) for k, v in carried.items()}
    return Start(state, opt, start.schedule, carried)
