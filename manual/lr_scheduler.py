"""Learning-rate schedules, as torch.optim.lr_scheduler, stepped once per iteration.

A schedule sets `optimizer.lr` from the base rate lr₀ (the optimizer's `lr` when the schedule is
made) and the number of steps t taken so far (0 for the first iteration). Each is the closed form
of its torch counterpart (torch computes the same values recursively):

    step         lr_t = lr₀ · γ^⌊t / step_size⌋                          StepLR(step_size, gamma=0.1)
    exponential  lr_t = lr₀ · γ^t                                          ExponentialLR(gamma)
    cosine       lr_t = η_min + (lr₀ − η_min) · (1 + cos(π t / T_max)) / 2   CosineAnnealingLR(T_max, eta_min=0)
    warmup       lr_t = lr₀ · (s + (1 − s) · min(t, W) / W)                 LinearLR(start_factor=s, total_iters=W)

warmup rises linearly from s·lr₀ to lr₀ over W = warmup_steps iterations and then stays at lr₀.
"""
import math
import sys

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


class LinearWarmup(LRScheduler):
    def __init__(self, optimizer, warmup_steps=5, start_factor=1.0 / 3):
        self.warmup_steps, self.start_factor = warmup_steps, start_factor
        super().__init__(optimizer)

    def lr_at(self, t):
        s = self.start_factor
        return self.base_lr * (s + (1 - s) * min(t, self.warmup_steps) / self.warmup_steps)


SCHEDULERS = {"step": StepLR, "exponential": ExponentialLR, "cosine": CosineAnnealingLR, "warmup": LinearWarmup}
