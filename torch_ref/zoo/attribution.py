"""Which of the zoo's mistakes reproduces a lockstep mismatch exactly: each mistake that applies to
the description (torch_ref/zoo/mistakes.py, `applicable`) is replayed on the same description, with
the same batches, dropout masks and mode, up to the mismatch's iteration, and its tensor at the
mismatch's stage is compared with the implementation's (the dtype's tolerance). The worked
example's errata are attributed the same way, figure by figure (torch_ref/example.py).

Its cost is bounded: it runs only on a failed run's first mismatch (torch_ref/lockstep/run.py),
only for the mistakes that apply, only for a mismatch within the first MAX_ITERATIONS iterations
of a description of at most MAX_PARAMETERS parameter elements, and stops trying after
BUDGET_SECONDS; `lockstep(..., attribution=False)` (`--no-attribution`) leaves it out.
"""
import time

import numpy as np

import manual.data
import manual.init
from ..lockstep.diagnosis import tensor_of
from ..testing import compare, tolerance
from ..twin.model import Twin
from .mistakes import applicable

MAX_ITERATIONS, MAX_PARAMETERS, BUDGET_SECONDS = 100, 100_000, 10.0


def attribute(desc, first, value, mode="free"):
    """The ids of the zoo's mistakes whose tensor at `first`'s iteration, stage and name is `value`
    (the implementation's), in the zoo's order; [] where none does or the run is over the bounds."""
    state = manual.init.initial_state(desc)
    if first.iteration >= MAX_ITERATIONS or sum(np.size(v) for v in state.values()) > MAX_PARAMETERS:
        return []
    rtol, atol = tolerance(desc["run"]["dtype"])
    deadline = time.monotonic() + BUDGET_SECONDS
    found = []
    for mistake in applicable(desc):
        if time.monotonic() > deadline:
            break
        try:
            with np.errstate(all="ignore"):  # some mistakes diverge: inf or NaN, never a match
                theirs = tensor_of(replay(desc, mistake, first.iteration, mode == "resync"), first.stage, first.name)
        except Exception:  # noqa: BLE001 - a mistake that cannot run on this description reproduces nothing
            continue
        if theirs is not None and compare(theirs, value, rtol, atol).ok:
            found.append(mistake.id)
    return found


def replay(desc, build, until, resync=False):
    """The results of iteration `until` of the engine `build(desc)` (a zoo mistake) trained on the
    description's batches from its initial state; `resync`: restarted from the torch twin's state
    after every iteration, as in --mode resync."""
    dtype = np.dtype(desc["run"]["dtype"])
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    impl = build(desc)
    impl.load_state_dict(state)
    twin = Twin(desc, state) if resync else None
    dropout = bool(desc["network"].get("dropout"))
    for it, (x, y) in zip(range(until + 1), manual.data.batches(desc, dtype)):
        kw = {"masks": manual.data.dropout_masks(desc, it, len(x))} if dropout else {}
        m = impl.train_step(x, y, **kw)
        if it == until:
            return m
        if twin is not None:
            r = twin.train_step(x, y, **kw)
            impl.load_state_dict(r["state_dict"])
            impl.load_optimizer_state(r.get("optimizer_state", {}))
    return None
