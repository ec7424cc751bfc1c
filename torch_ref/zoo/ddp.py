"""The data-parallel zoo: ways of writing the DistributedDataParallel training step that train
something other than the full-batch step, each run by the data-parallel lockstep
(torch_ref/distributed/) on 2 ranks and caught, with its diagnosis.

    backprop-check zoo --ddp [--json]

Each entry names where the check must stop (iteration, stage, tensor) and the cause its diagnosis
must name. The diagnosis is not told the mistake: it tests the known mistakes against gradients
the manual engine computes for every shard, and names the one that explains what DDP produced.
"""
import tomllib
from dataclasses import dataclass, field

from ..description import spec
from ..description.files import bundled
from ..distributed import Case, Setup, check

RANKS = 2


def worked6(steps=5):
    """the worked example's 2-2-2 network on a batch of 6 (half-sse: a sum)"""
    return _load("worked_example_batch6.toml", steps)


def three_layer(steps=5, batch_size=None):
    """a 3-layer network, mse (a mean), batches of 7: unequal shards (4 + 3 on 2 ranks)"""
    return _load("three_layer_minibatch.toml", steps, batch_size)


def three_layer_even(steps=5):
    """the 3-layer network on 24 samples in batches of 12: equal shards on 2 or 3 ranks, K = 2"""
    return _load("three_layer_minibatch.toml", steps, batch_size=12, n=24)


def _load(name, steps, batch_size=None, n=None):
    raw = tomllib.loads(bundled()[name.removesuffix(".toml")].read_text(encoding="utf-8"))
    raw["run"]["steps"] = steps
    if n is not None:
        raw["data"]["random"]["n"] = n
    if batch_size is not None:
        raw["data"]["batch_size"] = batch_size
    return spec.parse(raw)


@dataclass(frozen=True)
class DDPMistake:
    id: str
    mistake: str
    description: object        # () -> parsed description
    setup: Setup
    accumulate: int
    stage: str                 # where the check must stop
    tensor: str
    cause: str                 # what the diagnosis must name
    iteration: int = 0
    rank: int | None = 0

    def case(self):
        return Case(self.description(), self.accumulate, self.setup, label=self.id)


MISTAKES = [
    DDPMistake("ddp-summed-loss-not-rescaled",
               "a summed loss (half-sse) back-propagated as is: DDP averages the ranks' gradients, so they"
               " come out 1/R of the full-batch gradient",
               worked6, Setup(as_written=True), 1, "loss", "loss", "sum-loss-averaged"),
    DDPMistake("ddp-mean-loss-unequal-shards",
               "each rank's mean loss back-propagated as is on unequal shards: DDP's plain average of"
               " the ranks' means weighs the samples of the smaller shard more",
               three_layer, Setup(as_written=True), 1, "loss", "loss", "uneven-mean"),
    DDPMistake("ddp-accumulation-not-divided-by-k",
               "gradient accumulation over K = 2 micro-batches that forgets to divide each micro-batch loss"
               " by K: the accumulated gradient is K times too large",
               three_layer_even, Setup(as_written=True, divide_by_k=False), 2, "loss", "loss",
               "accumulate-no-divide"),
    DDPMistake("ddp-accumulation-without-no-sync",
               "gradient accumulation over K = 2 micro-batches without no_sync(): DDP all-reduces after every"
               " micro-batch (the sum is right, the communication is K times)",
               three_layer, Setup(no_sync=False), 2, "sync", "gradients after micro-batch 0", "no_sync-missing",
               rank=None),
    DDPMistake("ddp-parameter-outside-buckets",
               "layers.0.weight frozen while DDP built its buckets and trained afterwards: its gradient is"
               " never all-reduced, every rank steps with its own",
               three_layer, Setup(left_out=("layers.0.weight",)), 1, "grad", "layers.0.weight",
               "left-out-of-buckets"),
]


@dataclass
class DDPOutcome:
    entry: DDPMistake
    result: object             # the verdict.Result (its `parallel` record: the data-parallel run)
    where: tuple | None = field(default=None)

    @property
    def caught(self):
        return not self.result.ok

    @property
    def as_expected(self):
        m, e = self.result.first_mismatch, self.entry
        return (m is not None and (m.iteration, m.stage, m.name, m.rank) == (e.iteration, e.stage, e.tensor, e.rank)
                and m.cause == e.cause)

    def to_json(self):
        e, m = self.entry, self.result.first_mismatch
        return {"id": e.id, "mistake": e.mistake, "run_on": e.description.__doc__,
                "expected": {"iteration": e.iteration, "stage": e.stage, "tensor": e.tensor, "rank": e.rank,
                             "cause": e.cause},
                "caught": self.caught, "as_expected": self.as_expected,
                "mismatch": m.to_json() if m else None}


def run_zoo(mistakes=None, ranks=RANKS, timeout=60.0):
    """Every mistake on `ranks` processes, in one process group (one launch)."""
    mistakes = MISTAKES if mistakes is None else mistakes
    results = check([m.case() for m in mistakes], ranks, timeout=timeout)
    return [DDPOutcome(m, r) for m, r in zip(mistakes, results)]


def table(outcomes):
    lines = [f"{'id':<36} {'it':>3}  {'stage':<6} {'tensor':<30} {'rank':>4}  {'cause':<22} verdict", "-" * 120]
    for o in outcomes:
        e, m = o.entry, o.result.first_mismatch
        if m is None:
            lines.append(f"{e.id:<36} {'-':>3}  {'-':<6} {'not caught':<30} {'-':>4}  {'-':<22} MISSED")
        else:
            verdict = "caught where expected" if o.as_expected else (
                f"UNEXPECTED; expected iteration {e.iteration}, {e.stage}, {e.tensor}, rank {e.rank}, {e.cause}")
            rank = "all" if m.rank is None else m.rank
            lines.append(f"{e.id:<36} {m.iteration:>3}  {m.stage:<6} {m.name:<30} {rank:>4}  {m.cause:<22} {verdict}")
        lines.append(f"    {e.mistake}")
        if m is not None:
            lines.append(f"    diagnosis: {m.diagnosis}")
    n_ok = sum(o.as_expected for o in outcomes)
    lines += ["", f"{n_ok} / {len(outcomes)} data-parallel mistakes caught where expected, with the expected diagnosis"]
    return "\n".join(lines)
