"""Optimizers in numpy with torch.optim's argument names, defaults and update rules.

An optimizer holds `Parameter`s and updates `p.data` in place from `p.grad`. Its per-parameter
state is `state[i]`, a dict named as torch's state keys (`momentum_buffer`, `exp_avg`,
`exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`, `sum`, `acc_delta`, `mu_product` and the
integer `step`), created
lazily as torch creates it. `lr` is a plain attribute, so a learning-rate schedule can set it
(torch keeps it in `param_groups[0]["lr"]`; there is one group here). The constructors take torch's
arguments in torch's order with torch's defaults; `maximize` is keyword-only, as torch's (in
torch's RMSprop and Adagrad other arguments stand before it), and torch's implementation switches
(foreach, fused, capturable, differentiable) are not taken.

Notation for every rule below (t counts steps from 1; all element-wise):

    g   the gradient (negated first when maximize)      θ  the parameter      γ  lr
    λ   weight_decay                                     μ  momentum
"""
import sys
from functools import partial

import numpy as np

from .names import OPTIMIZER_REGISTRY, build, resolve


BLOCK = 1 << 16  # elements per block of add_scaled_ (256 KiB in float32: stays in cache)


def add_scaled_(x, alpha, y):
    """x ← x + alpha·y, in place, as torch's x.add_(y, alpha=alpha).

    numpy has no fused a·y + x: `x += alpha * y` makes a temporary as large as x (16 MB for a
    2048×2048 float32 layer) and goes over memory twice more. A large contiguous x is updated a
    block at a time, through a scratch block that stays in cache; the values are the same.
    """
    if (x.size <= BLOCK or x.shape != y.shape or x.dtype != y.dtype
            or not (x.flags.c_contiguous and y.flags.c_contiguous)):
        x += alpha * y
        return
    xf, yf = x.reshape(-1), y.reshape(-1)  # views
    scratch = np.empty(BLOCK, dtype=x.dtype)
    for start in range(0, x.size, BLOCK):
        block = scratch[:min(BLOCK, x.size - start)]
        xf[start:start + BLOCK] += np.multiply(yf[start:start + BLOCK], alpha, out=block)


class Optimizer:
    """What every optimizer shares: parameters, per-parameter state, zero_grad. Made as torch's
    base, Optimizer(params, defaults), with `defaults` holding lr and maximize (one group here)."""

    def __init__(self, params, defaults):
        self.params, self.lr, self.maximize = list(params), defaults["lr"], defaults.get("maximize", False)
        self.state = [{} for _ in self.params]

    def zero_grad(self, set_to_none=True):
        """torch's: every grad to None, or to 0 in place with set_to_none=False."""
        for p in self.params:
            p.zero_grad(set_to_none)

    def _grads(self, weight_decay=0.0):
        """(i, p, state, g) per parameter: g = ±grad (+ λθ for coupled weight decay), a new array."""
        for i, p in enumerate(self.params):
            if p.grad is None:  # no gradient this step: left alone, as torch.optim does
                continue
            g = -p.grad if self.maximize else p.grad  # never changed in place below
            if weight_decay != 0:
                g = g + weight_decay * p.data
            yield i, p, self.state[i], g


class SGD(Optimizer):
    """torch.optim.SGD.

        g ← g + λθ
        b ← g                          at t = 1   (momentum_buffer; only when μ ≠ 0)
        b ← μ b + (1 − dampening) g    at t > 1
        g ← g + μ b   (nesterov)   or   g ← b
        θ ← θ − γ g
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.momentum, self.dampening, self.weight_decay = momentum, dampening, weight_decay
        self.nesterov = nesterov

    def step(self):
        mu = self.momentum
        for _, p, state, g in self._grads(self.weight_decay):
            if mu != 0:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.copy()
                else:
                    b = state["momentum_buffer"]
                    b *= mu
                    b += (1 - self.dampening) * g
                b = state["momentum_buffer"]
                g = g + mu * b if self.nesterov else b
            add_scaled_(p.data, -self.lr, g)  # θ ← θ − γ g


class Adam(Optimizer):
    """torch.optim.Adam (coupled weight decay) and, with decoupled=True, torch.optim.AdamW.

        θ ← θ (1 − γλ)                  AdamW only
        g ← g + λθ                      Adam only
        m ← β1 m + (1 − β1) g           exp_avg
        v ← β2 v + (1 − β2) g²          exp_avg_sq
        v_max ← max(v_max, v)           max_exp_avg_sq, amsgrad only; then v stands for v_max below
        θ ← θ − (γ / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.betas, self.eps, self.weight_decay, self.amsgrad = tuple(betas), eps, weight_decay, amsgrad

    def step(self):
        beta1, beta2 = self.betas
        coupled = 0.0 if self.decoupled else self.weight_decay
        for _, p, state, g in self._grads(coupled):
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                if self.amsgrad:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            if self.decoupled and self.weight_decay != 0:
                p.data *= 1 - self.lr * self.weight_decay
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)  # = β1 m + (1 − β1) g, as torch's lerp
            v *= beta2
            v += (1 - beta2) * g * g
            if self.amsgrad:
                np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            step_size = self.lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / (1 - beta2 ** t) ** 0.5 + self.eps
            p.data -= step_size * (m / denom)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay θ ← θ(1 − γλ), default λ = 0.01."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    """torch.optim.RMSprop.

        g ← g + λθ
        v ← α v + (1 − α) g²                       square_avg
        g_avg ← α g_avg + (1 − α) g                grad_avg, centered only
        d ← √(v − g_avg²) + ε   (centered)   or   d ← √v + ε
        b ← μ b + g / d;   θ ← θ − γ b             momentum_buffer, when μ > 0
        θ ← θ − γ g / d                            when μ = 0
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered

    eps_inside_sqrt = False  # RMSpropEpsInside: √(v + ε)

    def step(self):
        a = self.alpha
        for _, p, state, g in self._grads(self.weight_decay):
            if not state:
                state.update(step=0, square_avg=np.zeros_like(p.data))
                if self.momentum > 0:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                if self.centered:
                    state["grad_avg"] = np.zeros_like(p.data)
            state["step"] += 1
            v = state["square_avg"]
            v *= a
            v += (1 - a) * g * g
            if self.centered:
                g_avg = state["grad_avg"]
                g_avg += (1 - a) * (g - g_avg)  # = α g_avg + (1 − α) g, as torch's lerp
                d = denominator(v - g_avg * g_avg, self.eps, self.eps_inside_sqrt)
            else:
                d = denominator(v, self.eps, self.eps_inside_sqrt)
            if self.momentum > 0:
                b = state["momentum_buffer"]
                b *= self.momentum
                b += g / d
                p.data -= self.lr * b
            else:
                p.data -= self.lr * (g / d)


class Adagrad(Optimizer):
    """torch.optim.Adagrad.

        g ← g + λθ
        s ← s + g²                 sum, starting at initial_accumulator_value
        γ_t = γ / (1 + (t − 1) lr_decay)
        θ ← θ − γ_t g / (√s + ε)
    """

    eps_inside_sqrt = False  # AdagradEpsInside: √(s + ε)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.lr_decay, self.weight_decay, self.eps = lr_decay, weight_decay, eps
        for p, state in zip(self.params, self.state):  # torch creates Adagrad's state eagerly
            state.update(step=0, sum=np.full_like(p.data, initial_accumulator_value))

    def step(self):
        for _, p, state, g in self._grads(self.weight_decay):
            state["step"] += 1
            clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
            s = state["sum"]
            s += g * g
            p.data -= clr * (g / denominator(s, self.eps, self.eps_inside_sqrt))


def denominator(v, eps, inside):
    """√v + ε, torch's, or with `inside` √(v + ε), the variant much real code writes."""
    return np.sqrt(v + eps) if inside else np.sqrt(v) + eps


class RMSpropEpsInside(RMSprop):
    """RMSprop with ε inside the square root, d = √(v + ε) (√(v − ḡ² + ε) centered): the
    description's `eps_inside_sqrt = true` (not torch's: the twin's reference is its own)."""

    eps_inside_sqrt = True


class AdagradEpsInside(Adagrad):
    """Adagrad with ε inside the square root, θ ← θ − γ_t g / √(s + ε): `eps_inside_sqrt = true`."""

    eps_inside_sqrt = True


class Adadelta(Optimizer):
    """torch.optim.Adadelta.

        g ← g + λθ
        v ← ρ v + (1 − ρ) g²                    square_avg
        δ ← √(u + ε) / √(v + ε) · g             u: acc_delta
        u ← ρ u + (1 − ρ) δ²
        θ ← θ − γ δ
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.rho, self.eps, self.weight_decay = rho, eps, weight_decay

    def step(self):
        rho = self.rho
        for _, p, state, g in self._grads(self.weight_decay):
            if not state:
                state.update(step=0, square_avg=np.zeros_like(p.data), acc_delta=np.zeros_like(p.data))
            state["step"] += 1
            v, u = state["square_avg"], state["acc_delta"]
            v *= rho
            v += (1 - rho) * g * g
            delta = np.sqrt(u + self.eps) / np.sqrt(v + self.eps) * g
            u *= rho
            u += (1 - rho) * delta * delta
            p.data -= self.lr * delta


def scalar32(x):
    """x rounded to float32, as torch.optim keeps its scalar state (mu_product, step)."""
    return float(np.float32(x))


class NAdam(Optimizer):
    """torch.optim.NAdam (decoupled_weight_decay: θ ← θ(1 − γλ) instead of g ← g + λθ).

        μ_t = β1 (1 − ½ · 0.96^(t ψ))           ψ = momentum_decay
        Π ← Π · μ_t                              mu_product (a float32 scalar, as torch's)
        m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
        d = √(v / (1 − β2^t)) + ε
        θ ← θ − γ (1 − μ_t) / (1 − Π) · g / d − γ μ_{t+1} / (1 − Π μ_{t+1}) · m / d
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.momentum_decay, self.decoupled_weight_decay = momentum_decay, decoupled_weight_decay

    def step(self):
        beta1, beta2 = self.betas
        coupled = 0.0 if self.decoupled_weight_decay else self.weight_decay
        for _, p, state, g in self._grads(coupled):
            if not state:
                state.update(step=0, mu_product=1.0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
            state["step"] += 1
            t = state["step"]
            if self.decoupled_weight_decay and self.weight_decay != 0:
                p.data *= 1 - self.lr * self.weight_decay
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))
            mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
            state["mu_product"] = scalar32(np.float32(state["mu_product"]) * np.float32(mu))
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * g * g
            d = np.sqrt(v / (1 - beta2 ** t)) + self.eps
            product = state["mu_product"]
            p.data += (-self.lr * (1.0 - mu) / (1.0 - product)) * (g / d)
            p.data += (-self.lr * mu_next / (1.0 - product * mu_next)) * (m / d)


class RAdam(Optimizer):
    """torch.optim.RAdam (decoupled_weight_decay: θ ← θ(1 − γλ) instead of g ← g + λθ).

        m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
        ρ∞ = 2 / (1 − β2) − 1;   ρ_t = ρ∞ − 2 t β2^t / (1 − β2^t)
        r = √((ρ_t − 4)(ρ_t − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρ_t))
        θ ← θ − γ m / (1 − β1^t) · r · √(1 − β2^t) / (√v + ε)     when ρ_t > 5
        θ ← θ − γ m / (1 − β1^t)                                  otherwise
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, maximize=False):
        super().__init__(params, {"lr": lr, "maximize": maximize})
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.decoupled_weight_decay = decoupled_weight_decay

    def step(self):
        beta1, beta2 = self.betas
        coupled = 0.0 if self.decoupled_weight_decay else self.weight_decay
        for _, p, state, g in self._grads(coupled):
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
            state["step"] += 1
            t = state["step"]
            if self.decoupled_weight_decay and self.weight_decay != 0:
                p.data *= 1 - self.lr * self.weight_decay
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * g * g
            correction1, correction2 = 1 - beta1 ** t, 1 - beta2 ** t
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * t * (beta2 ** t) / correction2
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                p.data -= (m / correction1) * self.lr * (correction2 ** 0.5 / (np.sqrt(v) + self.eps)) * rect
            else:
                p.data -= (m / correction1) * self.lr


# name in the description -> its class here, by torch's class name (manual/names.py's registry)
OPTIMIZERS = resolve(OPTIMIZER_REGISTRY, sys.modules[__name__])
# with eps_inside_sqrt = true: the variant, taking the same arguments (manual/names.py)
EPS_INSIDE_SQRT = {name: partial(build, OPTIMIZER_REGISTRY[name], cls)
                   for name, cls in (("rmsprop", RMSpropEpsInside), ("adagrad", AdagradEpsInside))}


def optimizer_class(args):
    """The callable that makes the optimizer of a description's section ({"name", argument...}),
    taking its arguments: torch's class, or with eps_inside_sqrt = true its variant."""
    name = args["name"]
    return EPS_INSIDE_SQRT[name] if args.get("eps_inside_sqrt") else OPTIMIZERS[name]
