"""--fd over the sequence modules (Embedding, RNN/LSTM/GRU, LastStep, MultiheadAttention,
TransformerEncoderLayer): the shipped sequence descriptions agree three ways, a large tensor is
checked at a fixed number of sampled elements (drawn from init.seed, reported per tensor), a
stateful run's differences start from the carried state, and a planted gradient error in a
recurrent module is found and named."""
import json

import numpy as np
import pytest
import torch

import manual.trainer
from manual import rnn
from torch_ref.cli import main
from torch_ref.description import spec
from torch_ref.description.files import bundled_path
from torch_ref.lockstep import finite_differences as fdcheck
from torch_ref.lockstep.finite_differences import FD_SAMPLE, FDCheck
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import Twin

torch.set_num_threads(1)
SEQUENCE_SPECS = ["char_lstm", "gru_adding", "birnn_classifier", "char_transformer"]


def described(name, steps, **data):
    desc = spec.override(spec.load(bundled_path(name)), steps=steps)
    desc["data"].update(data)
    return desc


@pytest.mark.parametrize("name", SEQUENCE_SPECS)
def test_a_shipped_sequence_description_agrees_three_ways(name, monkeypatch):
    """One iteration, every parameter tensor (at 8 sampled elements of a larger one, to keep the
    default profile fast; as shipped under -m slow): implementation, autograd and finite
    differences agree (a carried state: test_a_stateful_runs_differences_start_from_the_carried_state)."""
    monkeypatch.setattr(fdcheck, "FD_SAMPLE", 8)
    result = lockstep(described(name, 1, batch_size=4), fd_steps=1)
    assert result.ok and result.fd.ok, result.summary()
    assert set(result.fd.tensors()) == set(manual.trainer.build(described(name, 1)).trained)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQUENCE_SPECS)
def test_a_shipped_sequence_description_agrees_three_ways_as_shipped(name, capsys):
    assert main.main(["run", str(bundled_path(name)), "--steps", "3", "--fd"]) == 0, capsys.readouterr().out


def test_a_large_tensor_is_sampled_and_the_summary_says_how_many_of_how_many():
    """gru_adding: weight_ih (36 · 2 = 72) and weight_hh (36 · 12 = 432) are larger than FD_SAMPLE,
    the biases (36) and the Linear (12 + 1) are not: 2 passes per checked element."""
    fd = lockstep(described("gru_adding", 1), fd_steps=1).fd
    report = fd.to_json()
    sizes = {"layers.0.weight_ih_l0": 72, "layers.0.weight_hh_l0": 432, "layers.0.bias_ih_l0": 36,
             "layers.0.bias_hh_l0": 36, "layers.2.weight": 12, "layers.2.bias": 1}
    assert report["ok"] and report["sampled"] == {n: {"elements": FD_SAMPLE, "of": s}
                                                  for n, s in sizes.items() if s > FD_SAMPLE}
    assert report["forward_passes"] == 2 * sum(min(s, FD_SAMPLE) for s in sizes.values())
    head = fd.summary().splitlines()[0]
    assert f"layers.0.weight_hh_l0: {FD_SAMPLE} of 432 elements" in head and "init.seed" in head
    assert "layers.0.bias_ih_l0" not in head


def test_the_sample_is_drawn_from_the_seed_for_large_tensors_only_and_none_with_clipping():
    desc = described("gru_adding", 1)
    grads = {"a": np.zeros((36, 12)), "b": np.zeros(FD_SAMPLE), "c": np.zeros((FD_SAMPLE + 1,))}
    sampled = FDCheck(desc, 1).sample(grads)
    assert list(sampled) == ["a", "c"] and sampled["a"][1] == 432 and sampled["c"][1] == FD_SAMPLE + 1
    idx = sampled["a"][0]
    assert len(set(idx.tolist())) == FD_SAMPLE and np.array_equal(idx, np.sort(idx)) and idx.max() < 432
    assert np.array_equal(idx, FDCheck(described("gru_adding", 1), 1).sample(grads)["a"][0])  # reproducible
    desc["init"]["seed"] = 2
    assert not np.array_equal(idx, FDCheck(desc, 1).sample(grads)["a"][0])  # the seed's
    desc["clip"] = {"max_norm": 1.0, "norm_type": 2.0}
    assert FDCheck(desc, 1).sample(grads) == {}  # clipped differences need every element


def tiny_stateful_lstm(steps):
    """A small stateful LSTM (random (5, 2) samples) whose second batch starts from a carried state."""
    return spec.parse({"network": {"input_shape": [5, 2], "loss": "mse", "layers": [
                           {"type": "LSTM", "hidden_size": 3, "batch_first": True}, {"type": "LastStep"},
                           {"type": "Linear", "out_features": 2}]},
                       "init": {"seed": 0}, "optimizer": {"name": "adam", "lr": 0.01},
                       "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4},
                       "run": {"steps": steps, "stateful": True}})


def test_a_stateful_runs_differences_start_from_the_carried_state(monkeypatch):
    """Iterations 0 and 1 agree three ways; with the carried state withheld from the differences,
    iteration 1's are those of another loss (from zeros) and agree with neither gradient."""
    result = lockstep(tiny_stateful_lstm(2), fd_steps=2)
    assert result.ok and result.fd.ok and result.fd.to_json()["iterations_checked"] == 2, result.summary()
    monkeypatch.setattr(Twin, "carried_state", lambda self: {})
    fd = lockstep(tiny_stateful_lstm(2), fd_steps=2).fd
    verdicts = {(r["iteration"], r["verdict"]) for r in fd.rows}
    assert (0, "agree") in verdicts and (1, "description suspect") in verdicts and (0, "description suspect") not in verdicts


class GRUWrongHiddenGrad(rnn.GRU):
    """A GRU whose weight_hh_l0 gradient comes out 1e-4 too large (a planted backprop error)."""

    def backward(self, grad_output, grad_h_n=None, input_grad=True):
        p = self.weight_hh_l0
        before = None if p.grad is None else p.grad.copy()
        grad_input = super().backward(grad_output, grad_h_n, input_grad)
        p.grad += 1e-4 * (p.grad - (0 if before is None else before))
        return grad_input


def test_a_planted_gradient_error_in_a_recurrent_module_is_found_and_named():
    desc = described("gru_adding", 1)
    result = lockstep(desc, impl=manual.trainer.Trainer(desc, {rnn.GRU: GRUWrongHiddenGrad}), fd_steps=1)
    assert (result.first_mismatch.stage, result.first_mismatch.name) == ("grad", "layers.0.weight_hh_l0")
    verdicts = {name: t["verdict"] for name, t in result.fd.tensors().items()}
    assert verdicts.pop("layers.0.weight_hh_l0") == "implementation wrong"
    assert set(verdicts.values()) == {"agree"}
    worst = result.fd.tensors()["layers.0.weight_hh_l0"]["worst"]
    assert len(worst["index"]) == 2  # an index into the (36, 12) tensor, not into the sample
    assert "layers.0.weight_hh_l0: IMPLEMENTATION WRONG at iteration 0" in result.fd.summary()
