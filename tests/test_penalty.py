"""[penalty] (L1 and L2 inside the loss) and reduction = "batch-mean" on both sides, in lockstep;
a numpy implementation written as real code is (decay on the weights only, L2 inside the loss, a
sum over outputs averaged over the batch) passing with the option and failing without it at the
right iteration and stage; planted bugs; weight_decay against an L2 penalty; refusals."""
import json

import numpy as np
import pytest

from manual.trainer import Trainer
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep

LAYERS = {"input_shape": [3], "loss": "mse", "layers": [
    {"type": "Linear", "out_features": 5}, {"type": "Tanh"}, {"type": "Linear", "out_features": 2}]}


def raw(penalty=None, loss="mse", optimizer=None, network=None, dtype="float64", steps=12, clip=None):
    d = {"network": network or {"sizes": [3, 5, 2], "activation": ["tanh", "identity"], "loss": loss},
         "init": {"seed": 0}, "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
         "data": {"random": {"n": 10, "seed": 1}, "batch_size": 4}, "run": {"steps": steps, "dtype": dtype}}
    if penalty is not None:
        d["penalty"] = penalty
    if clip:
        d["clip"] = clip
    return d


CASES = [  # (id, penalty, loss, network)
    ("l2", {"l2": 0.1}, "mse", None),
    ("l1", {"l1": 0.05}, "mse", None),
    ("l1-l2-every-parameter", {"l1": 0.01, "l2": 0.2, "params": "*"}, "mse", None),
    ("l2-first-layer", {"l2": 0.3, "params": ["layers.0.weight"]}, "mse", None),
    ("l2-layers", {"l2": 0.1, "l1": 0.01}, "mse", LAYERS),
    ("half-sse-batch-mean", None, {"name": "half-sse", "reduction": "batch-mean"}, None),
    ("mse-batch-mean-l2", {"l2": 0.1}, {"name": "mse", "reduction": "batch-mean"}, None),
    ("cross-entropy-batch-mean", None, {"name": "cross_entropy", "reduction": "batch-mean"}, None),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case,penalty,loss,network", CASES, ids=[c[0] for c in CASES])
def test_penalties_and_loss_scale_in_lockstep(case, penalty, loss, network, dtype):
    desc = spec.parse(raw(penalty, loss, network=network, dtype=dtype))
    result = lockstep(desc, mode="free" if dtype == "float64" else "resync", fd_steps=1 if dtype == "float64" else 0)
    assert result.ok, str(result.first_mismatch)


@pytest.mark.parametrize("case,penalty,loss,network", CASES, ids=[c[0] for c in CASES])
def test_each_option_changes_the_loss_on_both_sides(case, penalty, loss, network):
    """Negative control: the twin with the option against the manual side without it fails at
    iteration 0's loss."""
    plain_loss = loss if isinstance(loss, str) else {**loss, "reduction": "sum"}
    desc = spec.parse(raw(penalty, loss, network=network))
    plain = spec.parse(raw(None, plain_loss, network=network))
    result = lockstep(desc, impl=Trainer(plain))
    assert (result.first_mismatch.iteration, result.first_mismatch.stage) == (0, "loss")


class RealCode:
    """A 3-5-2 tanh/identity network written as real code is: W (out, in), b (out,); the options
    as the textbooks write them. `bug`: "penalty-on-biases" (½λΣb² too), "lambda-not-half" (λΣW²)."""

    def __init__(self, decay_weights=0.0, l2=0.0, batch_mean=False, lr=0.1, bug=None):
        self.decay, self.l2, self.batch_mean, self.lr, self.bug = decay_weights, l2, batch_mean, lr, bug

    def load_state_dict(self, state):
        self.p = {k: np.array(v, dtype=np.float64) for k, v in state.items()}

    def train_step(self, x, y):
        W1, b1, W2, b2 = (self.p[k] for k in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"))
        h = np.tanh(x @ W1.T + b1)
        out = h @ W2.T + b2
        n = len(x) if self.batch_mean else 1
        loss = 0.5 * np.sum((out - y) ** 2) / n
        d2 = (out - y) / n
        d1 = (d2 @ W2) * (1 - h * h)
        grads = {"layers.0.weight": d1.T @ x, "layers.0.bias": d1.sum(0), "layers.1.weight": d2.T @ h,
                 "layers.1.bias": d2.sum(0)}
        half = 1.0 if self.bug == "lambda-not-half" else 0.5
        penalized = [k for k in grads if k.endswith("weight") or self.bug == "penalty-on-biases"]
        for k in penalized:
            loss += half * self.l2 * np.sum(self.p[k] ** 2)
            grads[k] = grads[k] + 2 * half * self.l2 * self.p[k]
        for k, g in grads.items():
            decay = self.decay * self.p[k] if k.endswith("weight") else 0.0  # network2.py: never the biases
            self.p[k] = self.p[k] - self.lr * (g + decay)
        return {"output": out, "loss": float(loss), "grads": grads, "state_dict": dict(self.p)}


REAL = [  # (id, the implementation, the description's options, the stage it fails at without them)
    ("decay-on-weights", RealCode(decay_weights=0.1),
     {"optimizer": {"name": "sgd", "lr": 0.1, "param_groups": [{"params": "*.weight", "weight_decay": 0.1}]}}, "param"),
    ("l2-in-the-loss", RealCode(l2=0.1), {"penalty": {"l2": 0.1}}, "loss"),
    ("sum-over-outputs-mean-over-batch", RealCode(batch_mean=True),
     {"loss": {"name": "half-sse", "reduction": "batch-mean"}}, "loss"),
]


def described(options):
    return spec.parse(raw(options.get("penalty"), options.get("loss", "half-sse"), options.get("optimizer")))


@pytest.mark.parametrize("case,impl,options,stage", REAL, ids=[r[0] for r in REAL])
def test_real_code_passes_with_the_option_and_fails_without_it(case, impl, options, stage):
    assert lockstep(described(options), impl=impl).ok
    result = lockstep(described({}), impl=impl)
    assert (result.first_mismatch.iteration, result.first_mismatch.stage) == (0, stage)


PLANTED = [  # (id, bug, the stage it is caught at, iteration 0)
    ("penalty-on-biases", "penalty-on-biases", "loss"),
    ("lambda-not-half", "lambda-not-half", "loss"),
]


@pytest.mark.parametrize("case,bug,stage", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_penalty_bugs_are_caught_at_iteration_0(case, bug, stage):
    result = lockstep(described({"penalty": {"l2": 0.1}}), impl=RealCode(l2=0.1, bug=bug))
    assert (result.first_mismatch.iteration, result.first_mismatch.stage) == (0, stage)
    # and with the loss skipped, at the gradients
    result = lockstep(described({"penalty": {"l2": 0.1}}), impl=RealCode(l2=0.1, bug=bug), skip_stages=["loss"])
    assert (result.first_mismatch.iteration, result.first_mismatch.stage) == (0, "grad")


def run_manual(desc):
    trainer, losses = Trainer(desc), []
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    for _ in range(5):
        losses.append(trainer.train_step(x, y)["loss"])
    return trainer.state_dict(), losses


@pytest.mark.parametrize("optimizer,same", [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, True),
    ({"name": "adam", "lr": 0.05}, True),      # torch's Adam adds λθ to the gradient: L2 in the update
    ({"name": "adamw", "lr": 0.05}, False),    # AdamW's decay never passes through the moments
])
def test_weight_decay_against_an_l2_penalty(optimizer, same):
    """weight_decay = λ on every parameter and [penalty] l2 = λ on every parameter: the same
    parameters for SGD and Adam (coupled), not for AdamW; the reported loss differs always (the
    penalty is in it, the decay is not)."""
    lam = 0.2
    decayed = spec.parse(raw(None, optimizer={**optimizer, "weight_decay": lam}))
    penalized = spec.parse(raw({"l2": lam, "params": "*"}, optimizer={**optimizer, "weight_decay": 0.0}))
    (a, loss_a), (b, loss_b) = run_manual(decayed), run_manual(penalized)
    close = all(np.allclose(a[k], b[k], rtol=1e-12, atol=1e-14) for k in a)
    assert close == same
    if same:  # the same parameters after the first update (the trainer starts from zeros), the penalty in one loss
        assert loss_a[1] < loss_b[1]


BAD = [  # (id, penalty, the field the message must start with)
    ("no-lambda", {"params": "*"}, "penalty"),
    ("negative", {"l2": -0.1}, "penalty.l2"),
    ("string", {"l1": "0.1"}, "penalty.l1"),
    ("no-match", {"l2": 0.1, "params": "*.gamma"}, "penalty.params"),
    ("no-match-in-list", {"l2": 0.1, "params": ["layers.0.weight", "x"]}, "penalty.params[1]"),
    ("unknown", {"l2": 0.1, "l3": 1}, "penalty.l3"),
]


@pytest.mark.parametrize("case,penalty,field", BAD, ids=[b[0] for b in BAD])
def test_bad_penalty_exits_2_naming_the_field(case, penalty, field, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(raw(penalty, steps=2)))
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"backprop-check: error: {field}: "), err


@pytest.mark.parametrize("loss", [{"name": "half-sse", "reduction": "mean"}, {"name": "mse", "reduction": "batch"}])
def test_bad_reduction_is_refused(loss, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(raw(None, loss, steps=2)))
    assert cli.main(["run", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("backprop-check: error: network.loss.reduction: ")


@pytest.mark.parametrize("penalty,loss", [({"l2": 0.1}, "mse"), (None, {"name": "mse", "reduction": "batch-mean"})],
                         ids=["penalty", "batch-mean"])
def test_the_data_parallel_check_refuses_what_it_does_not_verify(penalty, loss, capsys):
    """Each rank would add the penalty to its shard's loss (and a shard's batch is not the step's):
    --ranks refuses both before any process starts, naming it, exit 2."""
    from torch_ref import api
    with pytest.raises(spec.SpecError) as info:
        api.check(raw(penalty, loss), ranks=2)
    assert info.value.field == "ranks" and ("penalty" in str(info.value) or "batch-mean" in str(info.value))
