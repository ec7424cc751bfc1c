"""One side trained alone, without comparison: `backprop-check run SPEC --only manual|twin`.

Useful in itself (the final loss, the time per step) and what scripts/bench.py times. Each side
runs its plain training step: the manual engine's `Trainer.step`, the twin's `Twin.step`, neither
of which builds the lockstep's result dict nor copies anything out.
"""
import time
from dataclasses import dataclass

import numpy as np

import manual.data
import manual.init
import manual.trainer

from ..errors import SpecError

SIDES = ("manual", "twin")


@dataclass
class SoloResult:
    side: str
    steps: int
    final_loss: float
    seconds: float
    ok = True  # nothing is compared: the verdict is always a pass

    @property
    def per_step(self):
        return self.seconds / self.steps

    def to_json(self):
        return {"side": self.side, "steps": self.steps, "final_loss": self.final_loss,
                "seconds": self.seconds, "seconds_per_step": self.per_step}

    def summary(self):
        return (f"{self.side} only: {self.steps} step(s), final loss {self.final_loss!r}, "
                f"{self.per_step * 1e6:.1f} us per step")


def build(desc, side):
    """The side's trainer, loaded with the run's initial parameters."""
    if side not in SIDES:
        raise SpecError("--only", f"unknown side {side!r}; expected one of {list(SIDES)}")
    dtype = np.dtype(desc["run"]["dtype"])
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    if side == "manual":
        impl = manual.trainer.build(desc)
        impl.load_state_dict(state)
        return impl
    from ..twin.model import prepare_device
    from ..twin.model import Twin
    prepare_device(desc["run"]["device"])
    return Twin(desc, state)


def train_alone(desc, side, steps=None):
    """Train one side for the run's steps; return its final loss and the time taken."""
    steps = steps or desc["run"]["steps"]
    impl = build(desc, side)
    batches = manual.data.batches(desc, np.dtype(desc["run"]["dtype"]))
    step, sync = impl.step, _sync(desc)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(*next(batches))
    sync()
    seconds = time.perf_counter() - t0
    return SoloResult(side, steps, float(loss), seconds)


def _sync(desc):
    if desc["run"]["device"] == "cuda":
        import torch
        return torch.cuda.synchronize
    return lambda: None
