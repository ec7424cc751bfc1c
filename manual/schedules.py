"""A description's [scheduler] section made into a schedule: the class by its name (manual/names.py),
LambdaLR's expression parsed (manual/expression.py), SequentialLR's schedules made first on the
same optimizer, and `interval = "epoch"` (PerEpoch) stepping it once per pass over the training
set instead of once per iteration. The twin does the same with torch's classes
(torch_ref/twin/optim.py)."""
import math

from .data import training_set
from .expression import Expression
from .lr_scheduler import SCHEDULERS
from .modules import substitute


def iterations_per_epoch(desc):
    """The iterations of one pass over the training set at data.batch_size: ⌈n / batch_size⌉,
    or ⌊n / batch_size⌋ with data.drop_last (manual/data.py's batches)."""
    n, size = len(training_set(desc)[0]), desc["data"]["batch_size"]
    return n // size if desc["data"].get("drop_last") else math.ceil(n / size)


def schedule_arguments(args, make):
    """The constructor's keywords of a parsed schedule section (name, interval dropped): lr_lambda
    as an Expression, SequentialLR's schedulers each made by `make(section)`."""
    out = {k: v for k, v in args.items() if k not in ("name", "interval")}
    if "lr_lambda" in out:
        out["lr_lambda"] = Expression(out["lr_lambda"])
    if "schedulers" in out:
        out["schedulers"] = [make(s) for s in out["schedulers"]]
    return out


class PerEpoch:
    """Steps `scheduler` once every `iterations` calls of step(): a schedule stepped per epoch
    while the loop calls step() after every iteration. t of the schedule is then the epoch."""

    def __init__(self, scheduler, iterations):
        self.scheduler, self.iterations, self.count = scheduler, iterations, 0

    def step(self):
        self.count += 1
        if self.count % self.iterations == 0:
            self.scheduler.step()

    def get_last_lr(self):
        return self.scheduler.get_last_lr()


def make_scheduler(optimizer, args, desc, replace=None):
    """The schedule of a parsed [scheduler] section on `optimizer`, None without one. `replace`:
    manual.modules.substitute's stand-ins (the zoo's planted mistakes)."""
    if not args:
        return None

    def make(section):
        cls = substitute(SCHEDULERS[section["name"]], replace)
        return cls(optimizer, **schedule_arguments(section, make))

    scheduler = make(args)
    if args.get("interval") == "epoch":
        return PerEpoch(scheduler, iterations_per_epoch(desc))
    return scheduler
