"""The zoo: classic backprop mistakes, each a faulty implementation behind the plug-in interface,
each run in lockstep against the torch twin on a description chosen for it, each caught.

    backprop-check zoo [--json]

Every entry is a small variant of the manual engine (`manual.trainer.Trainer`): one component
swapped for a faulty one, nothing else changed; the real engine is never touched. An entry names
where the oracle must catch it (iteration, stage, tensor); `run_zoo` checks that it does.

The worked example's errata (torch_ref/example.py) are explained with this zoo: every entry that
applies to the worked example's network is tried on it, figure by figure.
"""
from dataclasses import dataclass, field

from . import spec
from .specfile import bundled_path
from .mistakes import (ActivationDerivativeDropped, AdamWithoutBiasCorrection, BiasGradAveragedOverBatch,
                       CrossEntropyWithoutTarget, FrozenBiasUpdated, GradsNotZeroed, HiddenErrorOneOutput,
                       HiddenErrorThroughUpdatedWeights, LossGradSign, LossMissingHalf, LrAppliedTwice,
                       MeanLossGradNotDividedByBatch, MomentumRestarted, OutputActivationMissing,
                       SigmoidDerivativeOnNet, WeightGradTransposed)


# --- descriptions chosen for the mistakes ---------------------------------------------------------

def worked(steps=3):
    """the worked example: 2-2-2 sigmoid, shared frozen biases, ½·SSE, SGD 0.5"""
    desc = spec.load(bundled_path("worked_example"))
    desc["run"] = {**desc["run"], "steps": steps}
    return desc


def random_net(sizes, activation, loss="mse", bias="per-neuron", batch_size=4, n=8, steps=3,
               optimizer=None, seed=0):
    return spec.parse({
        "network": {"sizes": sizes, "activation": activation, "bias": bias, "loss": loss},
        "init": {"seed": seed},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": n, "seed": seed + 1}, "batch_size": batch_size},
        "run": {"steps": steps, "dtype": "float64"},
    })


def square():
    """3-3-3 tanh, no biases, MSE: square weights, so a transposed gradient has the right shape"""
    return random_net([3, 3, 3], "tanh", bias="none")


def minibatch():
    """3-4-2 tanh → identity, per-neuron biases, MSE (mean), batches of 4, SGD"""
    return random_net([3, 4, 2], ["tanh", "identity"])


def classifier():
    """4-5-3 tanh → logits, softmax cross-entropy on class indices (mean), batches of 4, SGD"""
    return random_net([4, 5, 3], ["tanh", "identity"], loss="cross_entropy")


def momentum():
    """3-4-2 tanh → identity, MSE, batches of 4, SGD with momentum 0.9"""
    return random_net([3, 4, 2], ["tanh", "identity"], optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})


def adam():
    """3-4-2 tanh → identity, MSE, batches of 4, Adam (lr 0.01)"""
    return random_net([3, 4, 2], ["tanh", "identity"], optimizer={"name": "adam", "lr": 0.01})


# --- the table ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    id: str
    build: type              # the factory: build(desc) -> implementation
    description: object      # () -> parsed description it is run on
    stage: str               # where it must be caught
    tensor: str
    iteration: int = 0
    needs: dict = field(default_factory=dict)  # {"loss": (...), "bias": (...), ...}: where it applies

    @property
    def mistake(self):
        return " ".join(self.build.__doc__.split())

    def applies(self, desc):
        """True when the mistake has a meaning on `desc`'s network (loss, bias, optimizer, activation)."""
        have = {"loss": desc["network"]["loss"], "bias": desc["network"]["bias"],
                "optimizer": desc["optimizer"]["name"], "activation": desc["network"]["activation"]}
        for key, allowed in self.needs.items():
            if key == "momentum":
                if (desc["optimizer"].get("momentum") or 0) == 0:
                    return False
                continue
            values = have[key] if isinstance(have[key], list) else [have[key]]
            if key == "activation":
                if not any(v in allowed for v in values):
                    return False
            elif not all(v in allowed for v in values):
                return False
        return True


SIGMOID = {"activation": ("sigmoid",)}
OUTPUT_SIGMOID = {"activation": ("sigmoid",)}

ENTRIES = [
    Entry("loss-grad-sign", LossGradSign, worked, "delta", "layers.1"),
    Entry("activation-derivative-dropped", ActivationDerivativeDropped, worked, "delta", "layers.1", needs=SIGMOID),
    Entry("sigmoid-derivative-on-net", SigmoidDerivativeOnNet, worked, "delta", "layers.1", needs=SIGMOID),
    Entry("hidden-error-one-output", HiddenErrorOneOutput, worked, "delta", "layers.0"),
    Entry("hidden-error-through-updated-weights", HiddenErrorThroughUpdatedWeights, worked, "delta", "layers.0",
          needs={"optimizer": ("sgd",)}),
    Entry("mean-loss-grad-not-divided-by-batch", MeanLossGradNotDividedByBatch, minibatch, "delta", "layers.1",
          needs={"loss": ("mse",)}),
    Entry("cross-entropy-without-target", CrossEntropyWithoutTarget, classifier, "delta", "layers.1",
          needs={"loss": ("cross_entropy",)}),
    Entry("weight-grad-transposed", WeightGradTransposed, square, "grad", "layers.1.weight"),
    Entry("bias-grad-averaged-over-batch", BiasGradAveragedOverBatch, minibatch, "grad", "layers.1.bias",
          needs={"bias": ("per-neuron",)}),
    Entry("grads-not-zeroed", GradsNotZeroed, worked, "grad", "layers.1.weight", iteration=1),
    Entry("output-activation-missing", OutputActivationMissing, worked, "output", "output", needs=OUTPUT_SIGMOID),
    Entry("loss-missing-half", LossMissingHalf, worked, "loss", "loss", needs={"loss": ("half-sse",)}),
    Entry("frozen-bias-updated", FrozenBiasUpdated, worked, "param", "layers.0.bias",
          needs={"bias": ("shared-frozen",)}),
    Entry("lr-applied-twice", LrAppliedTwice, worked, "param", "layers.0.weight", needs={"optimizer": ("sgd",)}),
    Entry("momentum-buffer-restarted", MomentumRestarted, momentum, "optim", "layers.0.weight.momentum_buffer",
          iteration=1, needs={"optimizer": ("sgd",), "momentum": True}),
    Entry("adam-without-bias-correction", AdamWithoutBiasCorrection, adam, "param", "layers.0.weight",
          needs={"optimizer": ("adam",)}),
]


def entry(entry_id):
    for e in ENTRIES:
        if e.id == entry_id:
            return e
    raise KeyError(entry_id)


@dataclass
class Outcome:
    entry: Entry
    caught: bool           # the oracle found a mismatch
    where: tuple | None    # (iteration, stage, tensor) of the first mismatch
    mismatch: object       # the Mismatch, or None

    @property
    def as_expected(self):
        return self.where == (self.entry.iteration, self.entry.stage, self.entry.tensor)

    def to_json(self):
        e = self.entry
        return {
            "id": e.id, "mistake": e.mistake, "run_on": _first_line(e.description.__doc__),
            "expected": {"iteration": e.iteration, "stage": e.stage, "tensor": e.tensor},
            "caught": self.caught,
            "caught_at": (dict(zip(("iteration", "stage", "tensor"), self.where)) if self.where else None),
            "as_expected": self.as_expected,
            "mismatch": self.mismatch.to_json() if self.mismatch else None,
        }


def _first_line(doc):
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def run_entry(e):
    """Run one entry in lockstep against the torch twin on its own description."""
    from .lockstep import lockstep
    desc = e.description()
    result = lockstep(desc, impl=e.build(desc), impl_name=f"zoo:{e.id}")
    m = result.first_mismatch
    where = (m.iteration, m.stage, m.name) if m else None
    return Outcome(e, m is not None, where, m)


def run_zoo(entries=None):
    return [run_entry(e) for e in (ENTRIES if entries is None else entries)]


def table(outcomes):
    """Two lines per mistake: where it was caught (and whether that is where it must be), then what it is."""
    lines = [f"{'id':<38} {'iteration':>9}  {'stage':<6} {'tensor':<32} verdict", "-" * 100]
    for o in outcomes:
        e = o.entry
        it, stage, tensor = o.where if o.where else ("-", "-", "not caught")
        if o.as_expected:
            verdict = "caught where expected"
        else:
            verdict = f"{'CAUGHT' if o.caught else 'MISSED'}; expected iteration {e.iteration}, {e.stage}, {e.tensor}"
        lines.append(f"{e.id:<38} {it:>9}  {stage:<6} {tensor:<32} {verdict}")
        lines.append(f"    {e.mistake}  [on: {_first_line(e.description.__doc__)}]")
    n_ok = sum(o.as_expected for o in outcomes)
    lines += ["", f"{n_ok} / {len(outcomes)} mistakes caught where expected"]
    stages = sorted({o.where[1] for o in outcomes if o.where})
    lines.append(f"stages covered: {', '.join(stages)}")
    return "\n".join(lines)
