"""The shipped sequence descriptions and what they need: chars' `target = "last"` (one class per
sequence), the rounding second opinion of a [run] stateful run (the carried state is part of the
start it re-runs an iteration from), and planted recurrent mistakes caught in a stateful run.
(The descriptions themselves run in tests/test_layers.py's LAYER_SPECS; --fd over them in
tests/test_fd_sequences.py.)"""
import numpy as np
import pytest
import torch

import manual.data
import manual.init
import manual.trainer
from manual.sequences import chars
from torch_ref.description import spec
from torch_ref.description.files import bundled_path
from torch_ref.lockstep.rounding import SecondOpinion, Start, start_of
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import Twin
from torch_ref.zoo import mistakes_rnn as zoo

torch.set_num_threads(1)


def described(name, steps, dtype="float64", **run):
    desc = spec.override(spec.load(bundled_path(name)), steps=steps, dtype=dtype)
    desc["run"].update(run)
    return desc


# --- chars with target = "last": a sequence classifier's targets -----------------------------------

def test_last_targets_are_the_character_after_each_window():
    x, every = chars(16, 12, streams=4, seed=3)
    x_last, last = chars(16, 12, streams=4, seed=3, target="last")
    assert np.array_equal(x, x_last) and last.shape == (16,) and last.dtype == np.int64
    assert np.array_equal(last, every[:, -1])
    assert np.array_equal(last[:-4], x[4:, 0])  # the same stream's next window starts with it


def raw_classifier(**sequence):
    return {"network": {"input_shape": [12], "loss": "cross_entropy",
                        "layers": [{"type": "Embedding", "num_embeddings": 466, "embedding_dim": 4},
                                   {"type": "GRU", "hidden_size": 4, "batch_first": True},
                                   {"type": "LastStep"}, {"type": "Linear", "out_features": 466}]},
            "init": {"seed": 0}, "optimizer": {"name": "sgd"},
            "data": {"sequence": {"name": "chars", "n": 16, "length": 12, **sequence}, "batch_size": 4}}


@pytest.mark.parametrize("change,field,words", [
    ({"target": "first"}, "data.sequence.target", "'first'"),
    ({"target": 1}, "data.sequence.target", "1"),
    ({}, "data.sequence.name", "(length, C)"),                    # per-step targets, one output per sequence
    ({"name": "copy", "target": "last"}, "data.sequence.target", "unknown field of copy"),
])
def test_a_bad_target_is_refused_naming_the_field(change, field, words):
    raw = raw_classifier(target="last")
    raw["data"]["sequence"] = {k: v for k, v in raw["data"]["sequence"].items() if k != "target"} | change
    if change.get("name") == "copy":
        raw["network"]["layers"][-1]["out_features"] = 10
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw)
    assert e.value.field == field and words in str(e.value), str(e.value)


def test_last_targets_with_an_output_per_time_step_are_refused_naming_target():
    raw = raw_classifier(target="last")
    del raw["network"]["layers"][2]  # no LastStep: (12, 466) per sample
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw)
    assert e.value.field == "data.sequence.target" and "(C,)" in str(e.value)


def test_a_classifier_on_last_targets_runs_in_lockstep():
    result = lockstep(spec.parse({**raw_classifier(target="last"), "run": {"steps": 3}}))
    assert result.ok and result.steps_checked == 3, result.summary()


# --- the rounding second opinion of a stateful run --------------------------------------------------

def two_iterations(desc):
    """Iterations 0 and 1 of the manual engine and the twin: [(it, x, y, m, r)] and iteration 0's start."""
    state = manual.init.initial_state(desc)
    impl, twin = manual.trainer.build(desc), Twin(desc, state)
    impl.load_state_dict(state)
    start0 = Start(state, twin.optimizer_state(), twin.schedule_state())
    batches = manual.data.batches(desc, np.float64)
    out = []
    for it in range(2):
        x, y = next(batches)
        out.append((it, x, y, impl.train_step(x, y), twin.train_step(x, y)))
    return out, start0


def test_a_stateful_start_holds_the_carried_state_and_the_second_opinion_needs_it():
    """Iteration 1 of a stateful LSTM, the reference nudged just outside the fixed tolerance: from a
    start that holds the state the implementation carried in, the second opinion excuses it; from
    the same start with a zero state instead (what it re-ran from before), it does not."""
    desc = described("char_lstm", 2)
    (prev, (it, x, y, m, r)), start0 = two_iterations(desc)
    opinion = SecondOpinion(desc)
    assert opinion.carried_keys == ["layers.1.h", "layers.1.c"]
    start = start_of("free", start0, prev, None, opinion.carried_keys)
    assert all(np.array_equal(start.carried[k], prev[3]["states"][k]) for k in opinion.carried_keys)
    nudged = {**r, "output": r["output"] * (1 + 1e-10)}
    assert opinion.judge(it, start, x, y, m, nudged) is None
    zeros = Start(start.state, start.optimizer_state, start.schedule, None)
    assert opinion.judge(it, zeros, x, y, m, nudged) is not None


def test_a_stateful_start_is_unknown_without_the_implementations_states():
    desc = described("char_lstm", 2)
    (prev, _), start0 = two_iterations(desc)
    it, x, y, m, r = prev
    without = (it, x, y, {k: v for k, v in m.items() if k != "states"}, r)
    assert start_of("free", start0, without, None, ["layers.1.h", "layers.1.c"]) is None
    assert start_of("free", start0, without, None, None) is not None  # not stateful: not needed


MISTAKES = [  # (the planted LSTM, the iteration, stage and tensor where a stateful run must catch it)
    (zoo.LSTMStateNotDetached, 1, "grad", "layers.1."),   # batch 2's gradients (of some LSTM parameter), through batch 1
    (zoo.LSTMForgetDerivative, 0, "delta", "layers.1.h"),
    (zoo.LSTMGateOrder, 0, "forward", "layers.1.h"),
]


@pytest.mark.parametrize("cls,iteration,stage,name", MISTAKES, ids=[m[0].id for m in MISTAKES])
def test_a_planted_recurrent_mistake_is_caught_at_its_iteration_in_a_stateful_run(cls, iteration, stage, name):
    desc = described("char_lstm", 4)
    first = lockstep(desc, impl=cls(desc)).first_mismatch
    assert first is not None
    assert (first.iteration, first.stage) == (iteration, stage) and first.name.startswith(name), str(first)


@pytest.mark.slow
def test_a_correct_stateful_lstm_passes_250_iterations_free_in_float64():
    result = lockstep(described("char_lstm", 250))
    assert result.ok and result.steps_checked == 250, result.summary()
