"""The hand-written side: a vectorized numpy MLP with its backward pass and optimizer.

It never imports torch. `manual.trainer.build(desc)` gives the object the lockstep drives.
"""
from .trainer import Trainer, build

__all__ = ["Trainer", "build"]
