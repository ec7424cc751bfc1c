"""The seed's own per-neuron code (scripts/seed_port.py), certified on the worked example through
--impl, its own printout replayed against the vectorized engine, and mistakes in it caught."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual.trainer
from torch_ref import check
from torch_ref.cli import main as cli
from torch_ref.implementation import plugin

from conftest import SPECS

PORT = Path(__file__).resolve().parent.parent / "scripts" / "seed_port.py"
TARGET = f"{PORT}:build"
WORKED = str(SPECS / "worked_example.toml")


@pytest.fixture(scope="module")
def seed():
    """The port's module (its classes), loaded as --impl loads it."""
    return sys.modules[plugin.load(TARGET).__module__]


def test_the_port_passes_on_the_worked_example(capsys):
    """The README's command (on 500 of the 10000 iterations; all of them under -m slow)."""
    code = cli.main(["run", WORKED, "--impl", TARGET, "--steps", "500", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["first_mismatch"]
    assert out["ok"] and out["steps_checked"] == 500 and out["not_reported"] == []
    assert set(out["stats"]) == {"output", "loss", "delta", "grad", "param"}
    for stage, s in out["stats"].items():
        assert s["max_rel_err"] <= 1e-12, (stage, s)


@pytest.mark.slow
def test_the_port_passes_all_10000_iterations(capsys):
    assert cli.main(["run", WORKED, "--impl", TARGET]) == 0
    assert "PASS: 10000 iteration(s)" in capsys.readouterr().out


def test_the_seeds_own_printout_against_the_vectorized_engine(worked):
    """`python scripts/seed_port.py` replays the seed's driver (targets [0.01, 0.09], as its code
    has them): every printed error equals, to its 9 printed decimals, the manual engine's."""
    p = subprocess.run([sys.executable, str(PORT)], capture_output=True, text=True, check=True)
    lines = p.stdout.splitlines()
    assert len(lines) == 10000
    desc = copy.deepcopy(worked)
    desc["data"]["y"] = [[0.01, 0.09]]  # the seed code's target
    trainer = manual.trainer.build(desc)
    trainer.load_state_dict(manual.init.initial_state(desc))
    x, y = np.array([[0.05, 0.10]]), np.array([[0.01, 0.09]])
    for i, line in enumerate(lines):
        trainer.train_step(x, y)
        e = 0.5 * np.sum((trainer.model.forward(x) - y) ** 2)
        k, printed = line.split()
        assert int(k) == i
        assert abs(float(printed) - e) <= 0.5e-9 + 1e-15, (i, printed, e)


def test_the_port_reports_the_seeds_pd_values(worked, seed):
    """The port's deltas are the seed's pd_errors (what its train() computes), checked here by
    hand from the forward pass for the first iteration."""
    impl = seed.build(worked)
    impl.load_state_dict(manual.init.initial_state(worked))
    r = impl.train_step(np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]]))
    (o1, o2), = r["output"]
    expected = [(o1 - 0.01) * o1 * (1 - o1), (o2 - 0.99) * o2 * (1 - o2)]
    assert r["deltas"]["layers.1"][0] == pytest.approx(expected, rel=1e-14, abs=0)
    assert r["loss"] == pytest.approx(0.298371109, abs=5e-10)  # the seed's E_total
    assert r["state_dict"]["layers.0.bias"] == 0.35 and r["state_dict"]["layers.1.bias"] == 0.60


def _no_sigmoid_derivative(self):
    return 1.0


def _hidden_deltas_from_updated_weights(seed):
    """The classic ordering mistake the seed avoids: update the output weights first, then
    backpropagate through the *updated* weights."""
    original = seed.NeuralNetwork.train

    def train(self, training_inputs, training_outputs):
        original(self, training_inputs, training_outputs)  # to record the pd values and update
        for h, neuron in enumerate(self.hidden_layer.neurons):  # redo step 2 with the new weights
            d = sum(self.pd_output[o] * self.output_layer.neurons[o].weights[h]
                    for o in range(len(self.output_layer.neurons)))
            self.pd_hidden[h] = d * neuron.calculate_pd_total_net_input_wrt_input()
    return train


def test_mistakes_in_the_port_are_caught(monkeypatch, worked, seed):
    monkeypatch.setattr(seed.Neuron, "calculate_pd_total_net_input_wrt_input", _no_sigmoid_derivative)
    m = check(worked, TARGET, steps=5).first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, "delta", "layers.1")
    monkeypatch.undo()
    monkeypatch.setattr(seed.NeuralNetwork, "train", _hidden_deltas_from_updated_weights(seed))
    m = check(worked, TARGET, steps=5).first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, "delta", "layers.0")


def test_the_seeds_zero_bias_quirk_is_caught(worked):
    """NeuronLayer takes `bias if bias else random.random()`: a zero bias becomes a random one."""
    worked["init"]["biases"] = [0.0, 0.6]
    m = check(worked, TARGET, steps=5).first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, "output", "output")


@pytest.mark.parametrize("change,needle", [
    (("network", "sizes", [2, 2, 2, 2]), "exactly one hidden layer"),
    (("network", "bias", "per-neuron"), "network.bias = 'shared-frozen'"),
    (("data", "batch_size", 2), "data.batch_size = 1"),
])
def test_what_the_seed_cannot_do_is_refused(tmp_path, raw, capsys, change, needle):
    section, key, value = change
    raw[section][key] = value
    if key == "sizes":
        raw["init"] = {"seed": 0}
    if key == "bias":
        raw["init"]["biases"] = [[0.35, 0.35], [0.6, 0.6]]
    if key == "batch_size":
        raw["data"]["x"], raw["data"]["y"] = [[0.05, 0.1]] * 2, [[0.01, 0.99]] * 2
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(raw))
    assert cli.main(["run", str(f), "--impl", TARGET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backprop-check: error: --impl: the factory") and needle in err, err
