"""Learning-rate schedules, as torch.optim.lr_scheduler, stepped once per iteration.

A schedule sets `optimizer.lr` from the base rate lr₀ (the optimizer's `lr` when the schedule is
made) and the number of steps t taken so far (0 for the first iteration). Each is the closed form
of its torch counterpart (torch computes the same values recursively):

    StepLR(step_size, gamma=0.1)             lr_t = lr₀ · γ^⌊t / step_size⌋
    ExponentialLR(gamma)                     lr_t = lr₀ · γ^t
    CosineAnnealingLR(T_max, eta_min=0)      lr_t = η_min + (lr₀ − η_min) · (1 + cos(π t / T_max)) / 2
    LinearLR(start_factor=1/3, end_factor=1, total_iters=5)
                                             lr_t = lr₀ · (s + (e − s) · min(t, T) / T)    s, e, T the arguments

The description's names are the keys of SCHEDULERS (from manual/names.py's registry); its `warmup` (warmup_steps W, start_factor s)
is LinearLR(s, end_factor=1, total_iters=W): rising linearly from s·lr₀ to lr₀ over W iterations,
then staying at lr₀. torch's `last_epoch` argument (resuming a schedule) is not taken.
"""
import math
import sys

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
        self.optimizer, self.base_lr, self.last_epoch = optimizer, optimizer.lr, 0
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


# name in the description -> its schedule here, taking the description's arguments, by torch's class
# name (manual/names.py's registry: "warmup" is LinearLR with end_factor=1, total_iters=warmup_steps)
SCHEDULERS = resolve(SCHEDULER_REGISTRY, sys.modules[__name__])
