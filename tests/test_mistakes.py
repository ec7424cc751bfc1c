"""Every registered mistake (torch_ref/zoo/mistakes.py: the zoo's and the tests' planted bugs) is caught
by the lockstep at the iteration, stage and tensor the registry says (and, in a recurrent module's
state, the time step, and the module), in every dtype and mode it lists; the same runs pass with the engine unbroken (the control of the control); and a mistake is
planted by building, never by patching: the engine's own classes are left as they were."""
import numpy as np
import pytest

import manual.activations
import manual.attention
import manual.batchnorm
import manual.container
import manual.conv
import manual.data
import manual.dropout
import manual.embedding
import manual.flatten
import manual.init
import manual.layered
import manual.lr_scheduler
import manual.losses
import manual.modules
import manual.normalization
import manual.optim
import manual.pooling
import manual.rnn
import manual.rnn_cells
import manual.trainer
from torch_ref.cli import main as cli
from torch_ref.zoo import (faulty, mistakes, mistakes_attention, mistakes_embedding, mistakes_layers, mistakes_rnn,
                           planted)
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.verdict import STAGES

from conftest import SPECS

RUNS = [(m, dtype, mode) for m in mistakes.REGISTRY for dtype, mode in m.checks]


@pytest.mark.parametrize("m,dtype,mode", RUNS, ids=[f"{m.id}-{dtype}-{mode}" for m, dtype, mode in RUNS])
def test_every_mistake_is_caught_where_the_registry_says(m, dtype, mode):
    desc = m.described(dtype)
    result = lockstep(desc, impl=m(desc), mode=mode)
    mm = result.first_mismatch
    assert not result.ok and mm is not None, f"{m.id} was not caught"
    assert (mm.iteration, mm.stage, mm.name) == (m.iteration, m.stage, m.tensor), str(mm)
    text = str(mm)
    assert f"iteration {m.iteration}, stage {m.stage!r}, tensor {m.tensor!r}" in text
    assert mm.at.startswith(m.at) and bool(mm.at) == bool(m.at), f"{m.id}: at {mm.at!r}, expected {m.at!r}"
    assert m.caught_as_expected(mm)
    if m.at or (m.stage == "forward" and "module" in m.needs):  # caught in the module it is in
        assert mm.module.partition(" (")[2].rstrip(")") in m.needs["module"], text
    if mode == "shadow":  # judged by both distances to the float64 shadow
        for word in ("float32 twin", "float64 shadow", "manual", "factor"):
            assert word in text, text
    else:  # a real difference (a NaN is one: causal-mask-excludes-self), not a shape or an exception
        assert not mm.abs_err <= mm.atol + mm.rtol * abs(mm.reference), text


def _controls():
    """Each distinct description above once per dtype (in the first mode a mistake lists for it),
    with the engine unbroken. The shadow runs' control is tests/test_shadow.py's long run (the same
    description; 5000 steps are too long here)."""
    seen = {}
    for m, dtype, mode in RUNS:
        if mode != "shadow":
            seen.setdefault(repr(m.described(dtype)), (m, dtype, mode))
    return list(seen.values())


CONTROLS = _controls()


@pytest.mark.parametrize("m,dtype,mode", CONTROLS, ids=[f"{m.id}-{dtype}-{mode}" for m, dtype, mode in CONTROLS])
def test_the_same_runs_pass_with_the_engine_unbroken(m, dtype, mode):
    desc = m.described(dtype)
    result = lockstep(desc, impl=faulty.build(desc), mode=mode)
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == desc["run"]["steps"] > m.iteration


def test_the_registry_says_what_each_mistake_is_and_where():
    ids = [m.id for m in mistakes.REGISTRY]
    assert len(ids) == len(set(ids))
    assert mistakes.ZOO == [m for m in mistakes.REGISTRY if m.zoo] and len(mistakes.ZOO) >= 26
    # the sequence modules' (issue 13: at least eight), each where its module is
    sequence = mistakes_embedding.EMBEDDING_ZOO + mistakes_rnn.RNN_ZOO + mistakes_attention.ATTENTION_ZOO
    assert len(sequence) >= 10 and all(m in mistakes.ZOO for m in sequence)
    assert {t for m in sequence for t in m.needs["module"]} == {"Embedding", "LSTM", "GRU", "MultiheadAttention"}
    # forward and buffer: the layer lists' mistakes'; eval's (eval mode's, run with [run] eval_every)
    # are tests/test_evaluation.py's so far
    assert {m.stage for m in mistakes.ZOO} == set(STAGES) - {"eval"}
    assert {m.stage for m in mistakes_layers.LAYER_ZOO} >= {"forward", "delta", "grad", "buffer"}
    for m in mistakes.REGISTRY:
        assert m.what and m.replaces and m.stage in STAGES and m.checks, m.id
        assert mistakes.mistake(m.id) is m
        # a recurrent state's mistake names its time step, attention weights' their query, and only those
        key = m.tensor.rpartition(".")[2]
        assert bool(m.at) == (key in ("h", "c", "attn") and m.stage in ("forward", "delta")), m.id
        assert not m.at or m.at.startswith(f"{key} at t = " if key != "attn" else "attn at query "), m.id
    assert all(not m.zoo for m in planted.PLANTED)


ENGINE = [manual.activations.Sigmoid, manual.activations.Tanh, manual.modules.Linear,
          manual.modules.SharedBiasLinear, manual.losses.HalfSSELoss, manual.losses.MSELoss,
          manual.optim.SGD, manual.optim.Adam, manual.trainer.Trainer, manual.conv.Conv2d,
          manual.pooling.MaxPool2d, manual.pooling.AvgPool2d, manual.batchnorm.BatchNorm,
          manual.batchnorm.BatchNorm1d, manual.dropout.Dropout, manual.normalization.LayerNorm,
          manual.container.Residual, manual.flatten.Flatten, manual.rnn.RNNBase, manual.rnn.LSTM, manual.rnn.GRU,
          manual.rnn_cells.LSTMTimeLoop, manual.rnn_cells.GRUTimeLoop, manual.attention.MultiheadAttention,
          manual.embedding.Embedding]


def test_building_a_mistake_changes_no_class_of_the_engine():
    """Every mistake is built (and run a step) while the engine's classes keep their own methods:
    the plain engine built afterwards is exactly what it was."""
    before = {cls: dict(vars(cls)) for cls in ENGINE}
    for m in mistakes.REGISTRY:
        desc = m.described()
        impl = m(desc)
        modules = ([m for _, m, *_ in manual.layered.walk(impl.model.layers)] if impl.layered
                   else [*impl.model.layers, *impl.model.activations])
        parts = [impl, *modules, impl.loss_fn, impl.optimizer, impl.scheduler]
        planted_parts = [type(p) for p in parts if "planted" in vars(type(p))]
        assert planted_parts or m.replaces.keys() == {(manual.lr_scheduler, "warmup")}, m.id
        assert all(cls.__bases__[0].__module__.startswith("manual.") for cls in planted_parts)
        impl.load_state_dict(manual.init.initial_state(desc))
        impl.train_step(*next(iter(manual.data.batches(desc, impl.dtype))))
    assert {cls: dict(vars(cls)) for cls in ENGINE} == before
    engine = faulty.build(faulty.worked())
    assert type(engine) is manual.trainer.Trainer
    assert [type(a) for a in engine.model.activations] == [manual.activations.Sigmoid] * 2
    assert [type(layer) for layer in engine.model.layers] == [manual.modules.SharedBiasLinear] * 2


def test_a_mistake_in_one_layer_leaves_the_others_correct():
    impl = mistakes.OutputActivationMissing(faulty.worked())
    hidden, output = impl.model.activations
    assert type(hidden) is manual.activations.Sigmoid
    assert type(output) is not manual.activations.Sigmoid and isinstance(output, manual.activations.Sigmoid)
    x = np.array([[-1.0, 2.0]])
    assert np.array_equal(output.forward(x), x) and not np.array_equal(hidden.forward(x), x)


def test_a_planted_bug_runs_by_name_through_the_command(capsys):
    """The registry's names are plug-in targets: the command fails, naming where."""
    code = cli.main(["run", str(SPECS / "four_layer_mixed.toml"), "--steps", "50",
                     "--impl", "torch_ref.zoo.planted:TanhDerivativeMissing"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out
    assert "iteration 0, stage 'delta', tensor 'layers.0'" in out
