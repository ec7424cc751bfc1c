"""Learning-rate schedules, as torch.optim.lr_scheduler, stepped once per iteration (or per epoch:
manual/schedules.py's PerEpoch).

A schedule sets `optimizer.lr` from the base rate lr₀ (the optimizer's `lr` when the schedule is
made) and the number of steps t taken so far (0 for the first iteration). Each is the closed form
of its torch counterpart (torch computes the same values recursively):

    StepLR(step_size, gamma=0.1)             lr_t = lr₀ · γ^⌊t / step_size⌋
    ExponentialLR(gamma)                     lr_t = lr₀ · γ^t
    CosineAnnealingLR(T_max, eta_min=0)      lr_t = η_min + (lr₀ − η_min) · (1 + cos(π t / T_max)) / 2
    LinearLR(start_factor=1/3, end_factor=1, total_iters=5)
                                             lr_t = lr₀ · (s + (e − s) · min(t, T) / T)    s, e, T the arguments
    MultiStepLR(milestones, gamma=0.1)       lr_t = lr₀ · γ^(number of milestones <= t)
    CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min=0)
                                             as CosineAnnealingLR over the period T_i that holds t, with
                                             t counted from the period's start; T_0, T_0·T_mult, T_0·T_mult², ...
    PolynomialLR(total_iters=5, power=1)     lr_t = lr₀ · (1 − min(t, T) / T)^power
    ConstantLR(factor=1/3, total_iters=5)    lr_t = lr₀ · factor for t < T, then lr₀
    LambdaLR(lr_lambda)                      lr_t = lr₀ · lr_lambda(t)
    SequentialLR(schedulers, milestones)     schedulers[i] from milestone i−1 on, its t counted from there
    OneCycleLR(max_lr, total_steps, ...)     from max_lr / div_factor up to max_lr over pct_start of
                                             total_steps, then down to that / final_div_factor (cos or
                                             linear); with cycle_momentum, momentum or β₁ the other way

lr₀ is the optimizer's `initial_lr`, set by the first schedule made on it (torch's
group.setdefault("initial_lr", lr)), so that every schedule of a SequentialLR starts from it.

The description's names are the keys of SCHEDULERS (from manual/names.py's registry); its `warmup` (warmup_steps W, start_factor s)
is LinearLR(s, end_factor=1, total_iters=W): rising linearly from s·lr₀ to lr₀ over W iterations,
then staying at lr₀. torch's `last_epoch` argument (resuming a schedule) is not taken.
"""
import math
import sys
from bisect import bisect_right

from .names import SCHEDULER_REGISTRY, resolve

_LOG_MAX = math.log(sys.float_info.max)


def scaled_power(base, gamma, k):
    """base · γ^k for base, γ >= 0, as torch's recursive lr · γ reaches it: inf where that leaves
    the float range (Python's γ^k raises OverflowError instead, even where base · γ^k would fit)."""
    try:
        return base * gamma ** k
    except OverflowError:  # γ > 1 and γ^k beyond the range: through logarithms
        if base == 0:
            return 0.0
        log = math.log(base) + k * math.log(gamma)
        return math.inf if log > _LOG_MAX else math.exp(log)


class LRScheduler:
    """Sets optimizer.lr = lr_at(t); t starts at 0 (as torch's constructor, which takes one step)."""

    def __init__(self, optimizer):
        if getattr(optimizer, "initial_lr", None) is None:  # torch: group.setdefault("initial_lr", lr)
            optimizer.initial_lr = optimizer.lr
        self.optimizer, self.base_lr, self.last_epoch = optimizer, optimizer.initial_lr, 0
        optimizer.lr = self.lr_at(0)

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self):
        """[the rate set last], as torch's (one list entry per parameter group; one group here)."""
        return [self.optimizer.lr]


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return scaled_power(self.base_lr, self.gamma, t // self.step_size)


class ExponentialLR(LRScheduler):
    def __init__(self, optimizer, gamma):
        self.gamma = gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return scaled_power(self.base_lr, self.gamma, t)


class CosineAnnealingLR(LRScheduler):
    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """torch.optim.lr_scheduler.LinearLR: the factor goes linearly from start_factor to end_factor
    over total_iters steps, then stays at end_factor (either may be the larger):

        lr_t = lr₀ · (s + (e − s) · min(t, T) / T)      s = start_factor, e = end_factor, T = total_iters

    torch's own rules for the factors: 0 < start_factor <= 1 and 0 <= end_factor <= 1.
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor!r}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def lr_at(self, t):
        s, e, total = self.start_factor, self.end_factor, self.total_iters
        return self.base_lr * (s + (e - s) * min(t, total) / total)


class MultiStepLR(LRScheduler):
    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return scaled_power(self.base_lr, self.gamma, bisect_right(self.milestones, t))


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from lr₀ to eta_min over a period, then a restart at lr₀; the periods are
    T_0, T_0·T_mult, T_0·T_mult², ... (torch's T_i), t counted from the period's start (T_cur)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        self.T_0, self.T_mult, self.eta_min = T_0, T_mult, eta_min
        super().__init__(optimizer)

    def lr_at(self, t):
        period, into = self.T_0, t
        if self.T_mult == 1:
            into = t % period
        while into >= period:  # (T_mult >= 2: as many turns as restarts, a logarithm of t)
            into, period = into - period, period * self.T_mult
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * into / period)) / 2


class PolynomialLR(LRScheduler):
    def __init__(self, optimizer, total_iters=5, power=1.0):
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.base_lr * (1.0 - min(t, self.total_iters) / self.total_iters) ** self.power


class ConstantLR(LRScheduler):
    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5):
        if not 0 <= factor <= 1:
            raise ValueError(f"Constant multiplicative factor expected to be between 0 and 1, got {factor!r}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.base_lr * (self.factor if t < self.total_iters else 1.0)


class LambdaLR(LRScheduler):
    """lr_t = lr₀ · lr_lambda(t); a description's lr_lambda is a manual.expression.Expression."""

    def __init__(self, optimizer, lr_lambda):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.base_lr * self.lr_lambda(t)


class SequentialLR(LRScheduler):
    """schedulers[i] from milestones[i − 1] on (schedulers[0] from 0), each at t − its milestone and
    from lr₀, as torch's, which calls the new schedule's step(0) at its milestone."""

    def __init__(self, optimizer, schedulers, milestones):
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"Sequential Schedulers expects number of schedulers provided to be one more than"
                             f" the number of milestone points, but got {len(schedulers)} and {len(milestones)}")
        self.schedulers, self.milestones = list(schedulers), list(milestones)
        super().__init__(optimizer)

    def lr_at(self, t):
        i = bisect_right(self.milestones, t)
        return self.schedulers[i].lr_at(t - (self.milestones[i - 1] if i else 0))


class OneCycleLR(LRScheduler):
    """torch's 1cycle policy: phases (end step, lr from → to, momentum from → to), each annealed by
    cos (end + (start − end)(1 + cos(π p)) / 2) or linearly over its fraction p; stepping beyond
    total_steps is refused, as torch does. It sets the optimizer's lr (and, with cycle_momentum,
    its momentum or betas[0]) itself, whatever the optimizer was made with."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False):
        self.total_steps = total_steps if total_steps is not None else epochs * steps_per_epoch
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        if cycle_momentum and not (hasattr(optimizer, "momentum") or hasattr(optimizer, "betas")):
            raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
        self.anneal_strategy, self.cycle_momentum = anneal_strategy, cycle_momentum
        lr = {"initial": max_lr / div_factor, "max": max_lr}
        lr["min"] = lr["initial"] / final_div_factor
        mom = {"initial": max_momentum, "max": base_momentum, "min": max_momentum}  # the other way round
        ends = [pct_start * self.total_steps - 1, self.total_steps - 1]
        path = ["initial", "max", "min"]
        if three_phase:
            ends.insert(1, 2 * pct_start * self.total_steps - 2)
            path.insert(2, "initial")
        self.phases = [(end, lr[a], lr[b], mom[a], mom[b]) for end, a, b in zip(ends, path, path[1:])]
        optimizer.initial_lr = lr["initial"]
        super().__init__(optimizer)

    def anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr_at(self, t):
        """The rate at t; sets the momentum (or β₁) of the same phase on the optimizer."""
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {self.total_steps}")
        start = 0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if t <= end or i == len(self.phases) - 1:
                pct = (t - start) / (end - start)
                if self.cycle_momentum:
                    self.set_momentum(self.anneal(m0, m1, pct))
                return self.anneal(lr0, lr1, pct)
            start = end

    def set_momentum(self, value):
        if hasattr(self.optimizer, "betas"):
            self.optimizer.betas = (value, *self.optimizer.betas[1:])
        else:
            self.optimizer.momentum = value

# name in the description -> its schedule here, taking the description's arguments, by torch's class
# name (manual/names.py's registry: "warmup" is LinearLR with end_factor=1, total_iters=warmup_steps)
SCHEDULERS = resolve(SCHEDULER_REGISTRY, sys.modules[__name__])
