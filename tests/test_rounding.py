"""The second opinion (torch_ref/lockstep/rounding.py): a difference that rounding explains passes, and each
case is first shown to fail the fixed tolerance alone; a real mistake is still caught at the
iteration, stage and tensor where it acts, before and after the twin is re-anchored."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import manual.activations
import manual.modules
import manual.trainer
from torch_ref.lockstep import rounding
from torch_ref.description import spec
from torch_ref.zoo import runner as zoo
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.verdict import Mismatch


@pytest.fixture
def fixed_rule_only(monkeypatch):
    """The lockstep as it was before the second opinion: every rejected element is a mismatch."""
    def judge(self, it, start, x, y, m, r):
        self.used = 0.0
        return Mismatch(it, "fixed-rule", "", (), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    monkeypatch.setattr(rounding.SecondOpinion, "judge", judge)


def adam64(steps=150):
    """float64, free: Adam on a small net that fits its batch closely; rounding differences of 1e-16
    compound past the float64 tolerance (1e-12 relative, 1e-14 absolute) at iteration 96."""
    return spec.parse({
        "network": {"sizes": [3, 8, 8, 2], "activation": ["tanh", "relu", "identity"], "loss": "mse"},
        "init": {"seed": 1}, "optimizer": {"name": "adam", "lr": 0.05},
        "data": {"random": {"n": 16, "seed": 2}, "batch_size": 16}, "run": {"steps": steps, "dtype": "float64"}})


def test_the_fixed_rule_alone_fails_a_correct_free_float64_run(fixed_rule_only):
    r = lockstep(adam64())
    assert not r.ok and r.first_mismatch.stage == "fixed-rule" and r.first_mismatch.iteration == 96


def test_a_correct_free_float64_run_passes_and_the_twin_is_reanchored():
    r = lockstep(adam64())
    assert r.ok, r.summary()
    assert r.rounding["first"][0] == 96 and r.rounding["reanchored"] == r.rounding["iterations"] >= 1
    assert 0 < r.rounding["largest_fraction_of_allowance"] < 1
    assert "re-anchored" in r.summary()


class Planted(manual.trainer.Trainer):
    """The manual engine with one mistake at one iteration (`AT`): a gradient's sign, or the rate."""
    AT, BUG = 128, None

    def __init__(self, desc):
        super().__init__(desc)
        self.it = 0

    def clip_grads(self):
        super().clip_grads()
        if self.it == self.AT and self.BUG == "grad-sign":
            self.params["layers.1.bias"].grad = -self.params["layers.1.bias"].grad

    def optimizer_step(self):
        if self.it == self.AT and self.BUG == "rate":
            self.optimizer.lr *= 1.001
            super().optimizer_step()
            self.optimizer.lr /= 1.001
        else:
            super().optimizer_step()

    def train_step(self, x, y):
        result = super().train_step(x, y)
        self.it += 1
        return result


@pytest.mark.parametrize("bug, stage, tensor", [("grad-sign", "grad", "layers.1.bias"),
                                                ("rate", "param", "layers.0.weight")])
@pytest.mark.parametrize("mode", ["free", "resync"])
def test_a_mistake_after_the_runs_parted_is_caught_where_it_acts(bug, stage, tensor, mode):
    impl = type("P", (Planted,), {"BUG": bug})
    desc = adam64()
    r = lockstep(desc, impl=impl(desc), mode=mode)
    m = r.first_mismatch
    assert (m.iteration, m.stage, m.name) == (Planted.AT, stage, tensor), str(m)
    if mode == "free":
        assert r.rounding["reanchored"] >= 1  # the run had been re-anchored at 96 before the mistake


class NoOptimizerState(manual.trainer.Trainer):
    def train_step(self, x, y):
        result = super().train_step(x, y)
        del result["optimizer_state"]
        return result


def test_drift_without_the_optimizer_state_is_a_mismatch_that_says_why():
    desc = adam64()
    r = lockstep(desc, impl=NoOptimizerState(desc))
    assert not r.ok and r.first_mismatch.iteration == 96
    assert "report optimizer_state, or use --mode resync" in str(r.first_mismatch)


def saturated(activation, steps=5):
    """float32, a wide first layer with weights 40 times the usual: pre-activations far into the
    tails, outputs of 1e3; cancellation everywhere, and derivatives (1 − tanh², Φ + zφ) that are
    differences of nearly equal numbers."""
    return spec.parse({
        "network": {"sizes": [64, 16, 4], "activation": [activation, "identity"], "loss": "mse"},
        "init": {"seed": 0, "scheme": "xavier_normal", "gain": 40.0}, "optimizer": {"name": "adam", "lr": 1e-3},
        "data": {"random": {"n": 32, "seed": 1}, "batch_size": 32}, "run": {"steps": steps, "dtype": "float32"}})


ACTIVATIONS = ["tanh", "sigmoid", "relu", {"name": "leaky_relu", "negative_slope": 1.5}, "gelu",
               {"name": "gelu", "approximate": "tanh"}, "elu", "softplus"]
IDS = ["tanh", "sigmoid", "relu", "leaky_relu-1.5", "gelu", "gelu-tanh", "elu", "softplus"]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=IDS)
def test_the_fixed_float32_rule_alone_fails_the_saturated_nets(fixed_rule_only, activation):
    r = lockstep(saturated(activation), mode="resync")
    assert not r.ok and r.first_mismatch.stage == "fixed-rule"


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("mode", ["resync", "free", "shadow"])
def test_correct_float32_code_passes_on_the_saturated_nets(activation, mode):
    r = lockstep(saturated(activation), mode=mode)
    assert r.ok, r.summary()


class NetTanh(manual.activations.Tanh):
    """tanh whose derivative is taken as 1 − z² (of the net) instead of 1 − tanh²(z)."""

    def forward(self, x):
        self.z = x
        return super().forward(x)

    def backward(self, grad_output):
        return grad_output * (1.0 - self.z * self.z)


class WrongTanhDerivative(manual.trainer.Trainer):
    def __init__(self, desc):
        super().__init__(desc)
        self.model.activations[0] = NetTanh()


@pytest.mark.parametrize("mode", ["resync", "free", "shadow"])
def test_a_wrong_derivative_is_still_caught_on_the_saturated_net(mode):
    desc = saturated("tanh")
    m = lockstep(desc, impl=WrongTanhDerivative(desc), mode=mode).first_mismatch
    assert m is not None and (m.iteration, m.stage, m.name) == (0, "delta", "layers.0"), str(m)


def kink(w0, mask):
    """2-1-1, relu then identity, no biases: the hidden unit's pre-activation z = w0 · (1, 1)."""
    desc = spec.parse({
        "network": {"sizes": [2, 1, 1], "activation": ["relu", "identity"], "bias": "none", "loss": "half-sse"},
        "init": {"weights": [[w0], [[1.0]]]}, "optimizer": {"name": "sgd", "lr": 0.1},
        "data": {"x": [[1.0, 1.0]], "y": [[0.3]]}, "run": {"steps": 3, "dtype": "float64"}})

    class Relu(manual.activations.ReLU):
        def forward(self, x):
            self.mask = mask(x)
            return np.maximum(x, 0.0)

    impl = manual.trainer.Trainer(desc)
    impl.model.activations[0] = Relu()
    return desc, impl


@pytest.mark.parametrize("w0, mask, ok, excused", [
    ([0.5, -0.5], lambda z: z >= 0, True, 1),        # z = 0 exactly, on the kink: either slope is right
    ([0.5, -0.5], lambda z: z > 0, True, 0),         # torch's own convention
    ([0.45, -0.55], lambda z: z >= 0, True, 0),      # z = −0.1: both conventions agree
    ([0.45, -0.55], lambda z: z > -0.25, False, 0),  # the kink in the wrong place: a mistake
], ids=["on-kink-other-slope", "on-kink-torch-slope", "off-kink", "wrong-kink"])
def test_a_pre_activation_on_a_kink_may_take_either_slope(w0, mask, ok, excused):
    desc, impl = kink(w0, mask)
    r = lockstep(desc, impl=impl)
    assert r.ok == ok, r.summary()
    assert r.rounding["iterations"] == excused
    if not ok:
        m = r.first_mismatch
        assert (m.iteration, m.stage, m.name) == (0, "delta", "layers.0")


# every zoo mistake caught in float32 (resync and free): tests/test_mistakes.py


def _sweep():
    path = Path(__file__).resolve().parents[1] / "scripts" / "sweep.py"
    s = importlib.util.spec_from_file_location("sweep", path)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["classifier-adam", "steep-leaky-sgd", "gelu-rmsprop-bce"])
@pytest.mark.parametrize("mode", ["resync", "shadow"])
def test_the_sweep_in_small(name, mode):
    """A corner of scripts/sweep.py (the full sweep runs by hand): one seed, 60 steps."""
    row = _sweep()._one(("float32", name, mode, 7, 60))
    assert row["ok"], row


def test_the_docs_quote_a_full_sweep_of_the_current_script():
    """docs/verdicts.md's table is written by `scripts/sweep.py --docs`: it must be a full run of the
    script as it is now (every description, the full counts) and show no false alarm, no miss."""
    import re
    sweep = _sweep()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "verdicts.md").read_text()
    block = doc[doc.index(sweep.BEGIN):doc.index(sweep.END)]
    assert f"({sweep.SEEDS} seeds, {sweep.STEPS32} float32 steps, {sweep.STEPS64} float64 steps;" in block
    for name in [*sweep.FLOAT32, *sweep._shipped_float64()]:
        assert name in block
    assert re.search(r"^false alarms: 0 in \d+ runs of correct code$", block, re.M)
    caught = re.search(r"caught where they first act: (\d+) / (\d+)", block)
    assert caught and caught[1] == caught[2] == str(2 * len(zoo.ENTRIES))
