"""Recurrent modules in the check (issue 13): the twin's RNN/LSTM/GRU (torch_ref/twin/recurrent.py)
and their states probe against torch's own modules; the per-time-step state stages of the lockstep
(verdict.pairs, lockstep/states.py): their order and where a mismatch is placed; [run] stateful on
the description and on both sides; the description checks of a recurrent layer list."""
import functools

import numpy as np
import pytest
import torch

from torch_ref.description import spec
from torch_ref.lockstep.checker import Checker
from torch_ref.lockstep.states import visit_order
from torch_ref.lockstep.verdict import pairs
from torch_ref.testing import compare, tolerance
from torch_ref.twin.recurrent import GRU, LSTM, RNN, unroll

torch.set_num_threads(1)
F64 = tolerance("float64")

TWINS = [  # (class, arguments)
    (RNN, {"nonlinearity": "tanh"}), (RNN, {"nonlinearity": "relu"}), (LSTM, {}), (GRU, {}),
    (LSTM, {"num_layers": 2, "bidirectional": True}), (GRU, {"num_layers": 2, "bidirectional": True}),
    (RNN, {"num_layers": 3, "bidirectional": True, "bias": False}), (LSTM, {"batch_first": False}),
]


def twin(cls, args, seed=0):
    torch.manual_seed(seed)
    return cls(3, 4, **{"batch_first": True, **args}, dtype=torch.float64)


@pytest.mark.parametrize("cls,args", TWINS, ids=[f"{c.__name__}-{a}" for c, a in TWINS])
def test_the_unrolled_computation_is_torchs_to_float64_rounding(cls, args):
    """unroll (the states probe's computation) gives torch's output and h_n: a wrong gate order,
    the reset gate on the wrong side, a reverse direction run forwards would all differ."""
    m = twin(cls, args)
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    hx = torch.randn(m.num_layers * (2 if m.bidirectional else 1), 5 if m.batch_first else 6, 4,
                     dtype=torch.float64)
    hx = (hx, hx.cos()) if cls is LSTM else hx
    out, h_n = torch.nn.modules.rnn.__dict__[cls.__mro__[2].__name__].forward(m, x, hx)
    mine, _, finals = unroll(m, x, hx)
    assert compare(mine.detach().numpy(), out.detach().numpy(), *F64).ok
    h_n = h_n[0] if cls is LSTM else h_n
    assert compare(finals.detach().numpy(), h_n.detach().numpy(), *F64).ok


def test_the_probes_state_gradients_give_torchs_input_gradient():
    """For a one-layer tanh RNN, dE/dx_t = (dE/dh_t · (1 − h_t²)) W_ih: the probe's total state
    gradients (through the output and the recurrence) must give autograd's gradient of nn.RNN's input."""
    m = twin(RNN, {})
    x = torch.randn(5, 7, 3, dtype=torch.float64, requires_grad=True)
    out = m(x)
    g = torch.randn_like(out)
    out.backward(g)
    states, grads = m.probe(g)
    h, dh = states["h"][0, 0], grads["h"][0, 0]  # (T, N, H)
    dx = ((dh * (1 - h * h)) @ m.weight_ih_l0).transpose(0, 1)
    assert compare(dx.detach().numpy(), x.grad.numpy(), *F64).ok


@pytest.mark.parametrize("cls,args", TWINS[2:6], ids=[f"{c.__name__}-{a}" for c, a in TWINS[2:6]])
def test_the_last_states_gradient_is_the_outputs_own(cls, args):
    """The last layer's state at the last step it computes is used by the output only: its gradient
    is the output's at that step (direction 0 at t = T − 1, direction 1 at t = 0)."""
    m = twin(cls, args)
    out = m(torch.randn(3, 5, 3, dtype=torch.float64))
    g = torch.randn_like(out)
    states, grads = m.probe(g)
    assert tuple(grads["h"].shape) == (m.num_layers, 2 if m.bidirectional else 1, 5, 3, 4)
    assert torch.equal(grads["h"][-1, 0, -1], g[:, -1, :4])
    if m.bidirectional:
        assert torch.equal(grads["h"][-1, 1, 0], g[:, 0, 4:])
    assert set(states) == ({"h", "c"} if cls is LSTM else {"h"})


def test_a_carrying_twin_starts_from_the_last_state_detached_and_from_zeros_otherwise():
    m = twin(LSTM, {"num_layers": 2})
    x1, x2 = (torch.randn(4, 5, 3, dtype=torch.float64) for _ in range(2))
    first = m(x1)
    assert m.hx is None or not m.carry  # not carrying: nothing kept
    m.carry = True
    m.reset_state()
    assert torch.equal(m(x1), first)  # the first batch from zeros
    h_n = m.h_n
    second = m(x2)
    assert not m.last_hx[0].requires_grad and torch.equal(m.last_hx[0], h_n[0].detach())
    assert not torch.equal(second, torch.nn.LSTM.forward(m, x2)[0])  # the carried state changed it
    m.eval()
    kept = m.hx
    m(x1)
    assert m.hx is kept  # an evaluation pass leaves the carried state
    m.train()
    m(torch.randn(2, 5, 3, dtype=torch.float64))  # another batch size: from zeros
    assert m.last_hx is None


# -- the state stages of the lockstep: order and placement -------------------------------------

def results(seed=0, layers=2, dirs=2, steps=6, n=3, h=4):
    """A pair of identical results of a layer list with a recurrent module layers.1 (LSTM)."""
    rng = np.random.default_rng(seed)
    shape = (layers, dirs, steps, n, h)
    r = {"forward": {"layers.0": rng.standard_normal((n, steps, 2)), "layers.1": rng.standard_normal((n, steps, 8)),
                     "layers.2": rng.standard_normal((n, 8))},
         "states": {"layers.1.h": rng.standard_normal(shape), "layers.1.c": rng.standard_normal(shape)},
         "output": rng.standard_normal((n, 8)), "loss": 1.0,
         "deltas": {"layers.0": rng.standard_normal((n, steps, 2)), "layers.1": rng.standard_normal((n, steps, 8)),
                    "layers.2": rng.standard_normal((n, 8))},
         "grad_states": {"layers.1.h": rng.standard_normal(shape), "layers.1.c": rng.standard_normal(shape)},
         "grads": {"layers.1.weight_ih_l0": rng.standard_normal((16, 2))},
         "state_dict": {"layers.1.weight_ih_l0": rng.standard_normal((16, 2))}, "buffers": ()}
    m = {k: ({n: a.copy() for n, a in v.items()} if isinstance(v, dict) else v) for k, v in r.items()}
    return m, r


def test_states_are_compared_before_their_modules_output_and_their_gradients_after_its_delta():
    m, r = results()
    order = [(stage, name) for stage, name, _, _ in pairs(m, r)]
    assert order[:5] == [("forward", "layers.0"), ("forward", "layers.1.h"), ("forward", "layers.1.c"),
                         ("forward", "layers.1"), ("forward", "layers.2")]
    deltas = [name for stage, name in order if stage == "delta"]
    assert deltas == ["layers.2", "layers.1", "layers.1.h", "layers.1.c", "layers.0"]
    del m["states"], m["grad_states"]  # an implementation that does not report them: not compared
    assert not any(name.endswith((".h", ".c")) for _, name, _, _ in pairs(m, r))


def test_the_visit_order_is_the_computations():
    forward = visit_order((2, 2, 3), "forward")
    assert forward[:6] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 2), (0, 1, 1), (0, 1, 0)]
    assert visit_order((2, 2, 3), "delta") == forward[::-1]


# (stage, key, [planted (l, d, t, n, h)], the one reported): the first in the computation's order
PLANTED = [
    ("forward", "states", [(0, 0, 4, 2, 1), (0, 0, 2, 1, 3)], (0, 0, 2, 1, 3)),  # t rising, direction 0
    ("forward", "states", [(0, 1, 1, 0, 0), (0, 1, 4, 2, 2)], (0, 1, 4, 2, 2)),  # t falling, direction 1
    ("forward", "states", [(1, 0, 0, 0, 0), (0, 1, 0, 1, 1)], (0, 1, 0, 1, 1)),  # layer by layer
    ("delta", "grad_states", [(0, 0, 4, 2, 1), (0, 0, 2, 1, 3)], (0, 0, 4, 2, 1)),  # backward: t falling
    ("delta", "grad_states", [(1, 1, 1, 0, 0), (1, 1, 4, 2, 2)], (1, 1, 1, 0, 0)),  # direction 1 first, t rising
    ("delta", "grad_states", [(1, 0, 0, 0, 0), (0, 1, 0, 1, 1)], (1, 0, 0, 0, 0)),  # last layer first
]


@pytest.mark.parametrize("stage,key,planted,reported", PLANTED)
def test_a_state_mismatch_reports_the_first_wrong_time_step_in_the_computations_order(stage, key, planted,
                                                                                     reported):
    m, r = results()
    for k, index in enumerate(planted):
        m[key]["layers.1.h"][index] += 1.0 + k  # the later one larger: the worst element is not the first
    checker = Checker(m, r, *F64)
    first = checker.check(4, m, r)
    assert (first.stage, first.name, first.index, first.n_bad) == (stage, "layers.1.h", reported, 2)
    l, d, t, n, h = reported
    assert first.at == f"h at t = {t}, layer {l}, direction {d}, sample {n}, unit {h}"
    assert first.manual == m[key]["layers.1.h"][reported] and first.reference == r[key]["layers.1.h"][reported]
    first.module = "layers.1 (LSTM)"
    text = str(first)
    assert (f"stage {stage!r}, tensor 'layers.1.h', module layers.1 (LSTM): h at t = {t}, layer {l}, "
            f"direction {d}, sample {n}, unit {h}") in text
    assert "rtol 1e-12" in text and "manual = " in text


def test_a_cell_state_mismatch_before_h_is_reported_as_c():
    m, r = results()
    m["states"]["layers.1.c"][0, 0, 3, 1, 2] += 1e-6
    first = Checker(m, r, *F64).check(0, m, r)
    assert first.name == "layers.1.c" and first.at.startswith("c at t = 3, layer 0, direction 0, sample 1, unit 2")


# -- [run] stateful in the description ----------------------------------------------------------

MLP_RAW = {"network": {"sizes": [2, 3, 1], "activation": ["tanh", "identity"], "loss": "mse"},
           "init": {"seed": 0}, "optimizer": {"name": "sgd"}, "data": {"random": {"n": 4}, "batch_size": 2}}


@pytest.mark.parametrize("value,words", [(1, "true or false"), ("yes", "true or false"), (True, "recurrent")])
def test_a_bad_stateful_is_refused_naming_the_field(value, words):
    with pytest.raises(spec.SpecError) as e:
        spec.parse({**MLP_RAW, "run": {"stateful": value}})
    assert e.value.field == "run.stateful" and words in str(e.value)


def test_stateful_false_is_accepted_on_any_network():
    assert spec.parse({**MLP_RAW, "run": {"stateful": False}})["run"]["stateful"] is False


# -- end to end: a recurrent layer list in lockstep (manual/rnn.py against the twin) ---------------

def sequence_raw(kind, stateful=False, steps=200, dtype="float64", first_linear=True, **extra):
    """Linear?/RNN|LSTM|GRU (2 layers, bidirectional)/LastStep/Linear on random (T, F) samples."""
    layers = [{"type": "Linear", "out_features": 4}] if first_linear else []
    layers += [{"type": kind, "hidden_size": 5, "num_layers": 2, "bidirectional": True, "batch_first": True, **extra},
               {"type": "LastStep"}, {"type": "Linear", "out_features": 2}]
    return {"network": {"input_shape": [6, 3], "layers": layers, "loss": "mse"}, "init": {"seed": 0},
            "optimizer": {"name": "adam", "lr": 0.01}, "data": {"random": {"n": 16}, "batch_size": 4},
            "run": {"steps": steps, "dtype": dtype, "stateful": stateful}}


def run_sequence(kind, stateful=False, steps=200, dtype="float64", mode="free", impl=None, **kw):
    from torch_ref.lockstep.run import lockstep
    return lockstep(spec.parse(sequence_raw(kind, stateful, steps, dtype, **kw)), impl=impl, mode=mode)


CASES = [(kind, stateful, first) for kind in ("RNN", "LSTM", "GRU") for stateful in (False, True)
         for first in (True, False)]


@pytest.mark.parametrize("kind,stateful,first_linear", CASES)
def test_a_recurrent_layer_list_passes_in_float64_and_compares_every_state(kind, stateful, first_linear, steps=10,
                                                                          mode="free"):
    result = run_sequence(kind, stateful, steps, first_linear=first_linear, mode=mode)
    assert result.ok and result.steps_checked == steps, result.summary()
    i = 1 if first_linear else 0
    keys = [f"layers.{i}.h"] + ([f"layers.{i}.c"] if kind == "LSTM" else [])
    assert result.stats["forward"]["max_abs_err"] < 1e-12
    compared = {name for name in Checker(*_both(kind, stateful, first_linear), *F64).keys}
    assert {("forward", k) for k in keys} | {("delta", k) for k in keys} <= compared


@pytest.mark.slow
@pytest.mark.parametrize("kind,stateful,first_linear", CASES)
def test_a_recurrent_layer_list_passes_200_iterations_in_float64(kind, stateful, first_linear):
    # (free mode, stateful too: the carried state is part of the rounding second opinion's start)
    test_a_recurrent_layer_list_passes_in_float64_and_compares_every_state(kind, stateful, first_linear, 200, "free")


def _both(kind, stateful, first_linear):
    """One iteration's results of both sides (manual, twin)."""
    import manual.init
    import manual.trainer
    from torch_ref.twin.model import Twin
    desc = spec.parse(sequence_raw(kind, stateful, 1, first_linear=first_linear))
    state = manual.init.initial_state(desc)
    x = np.random.default_rng(0).standard_normal((4, 6, 3))
    y = np.random.default_rng(1).standard_normal((4, 2))
    trainer = manual.trainer.build(desc)
    trainer.load_state_dict(state)
    return trainer.train_step(x, y), Twin(desc, state).train_step(x, y)


@pytest.mark.parametrize("kind,stateful", [("LSTM", True), ("GRU", False), ("RNN", True)])
@pytest.mark.parametrize("mode", ["resync", "shadow"])
def test_a_recurrent_layer_list_passes_in_float32(kind, stateful, mode):
    result = run_sequence(kind, stateful, 20, "float32", mode)
    assert result.ok and result.steps_checked == 20, result.summary()


class NotCarrying:
    """The manual engine (a plug-in) that starts every batch from zeros whatever [run] stateful says."""

    def __init__(self, desc):
        import manual.trainer
        self.trainer = manual.trainer.build(desc)
        self.trainer.model.set_carry(False)

    def load_state_dict(self, state):
        self.trainer.load_state_dict(state)

    def train_step(self, x, y):
        return self.trainer.train_step(x, y)


def test_a_side_that_does_not_carry_the_state_is_caught_at_the_first_carried_step():
    """stateful: the second batch starts from the first's final state on the twin; a side starting
    from zeros differs at iteration 1, in the first state the computation makes (layer 0,
    direction 0, t = 0), before the module's output."""
    desc = spec.parse(sequence_raw("LSTM", True, 5))
    from torch_ref.lockstep.run import lockstep
    first = lockstep(desc, impl=NotCarrying(desc)).first_mismatch
    assert (first.iteration, first.stage, first.name) == (1, "forward", "layers.1.h")
    assert first.module == "layers.1 (LSTM)" and first.at.startswith("h at t = 0, layer 0, direction 0,")
    assert "outside the measured rounding allowance of torch's step from the same start too" in str(first)
    assert lockstep(spec.parse(sequence_raw("LSTM", False, 5)), impl=NotCarrying(desc)).ok  # not stateful: the same


def test_a_plugin_without_states_is_not_compared_on_them_and_one_with_a_wrong_state_is_caught():
    desc = spec.parse(sequence_raw("GRU", False, 3))
    from torch_ref.lockstep.run import lockstep

    class Plugin(NotCarrying):
        def __init__(self, desc, change):
            super().__init__(desc)
            self.change = change

        def train_step(self, x, y):
            r = self.trainer.train_step(x, y)
            return self.change(r) or r

    without = lockstep(desc, impl=Plugin(desc, lambda r: r.pop("states") and r.pop("grad_states") and None))
    assert without.ok and "forward" in without.stats and without.not_reported == []

    def wrong(r):
        r["grad_states"] = {"layers.1.h": r["grad_states"]["layers.1.h"] * 1.001}  # a subset, scaled
    first = lockstep(desc, impl=Plugin(desc, wrong)).first_mismatch
    assert (first.iteration, first.stage, first.name) == (0, "delta", "layers.1.h")
    # backward visits the last layer's direction 1 first, t rising; LastStep's gradient reaches that
    # direction at t = T − 1 only (every earlier state of it feeds earlier outputs only): zero, equal
    assert first.at.startswith("h at t = 5, layer 1, direction 1,")


BAD_RECURRENT = [
    ({"batch_first": False}, "network.layers[1].batch_first", "batch_first = true"),
    ({"dropout": 0.2}, "network.layers[1].dropout", "0.2"),
    ({"input_size": 7}, "network.layers[1].input_size", "[6, 4]"),
]


@pytest.mark.parametrize("args,field,words", BAD_RECURRENT, ids=[f for _, f, _ in BAD_RECURRENT])
def test_a_bad_recurrent_module_exits_2_naming_the_field(args, field, words, tmp_path, capsys):
    import json

    from torch_ref.cli import main as cli
    path = tmp_path / "bad.json"
    raw = sequence_raw("LSTM", False, 2)
    raw["network"]["layers"][1].update(args)
    path.write_text(json.dumps(raw))
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f" {field}:" in err and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_proj_size_and_a_recurrent_module_on_flat_samples_are_refused_naming_the_field():
    raw = sequence_raw("LSTM", False, 2)
    raw["network"]["layers"][1]["proj_size"] = 2
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw)
    assert e.value.field == "network.layers[1].proj_size"
    raw = sequence_raw("GRU", False, 2)
    raw["network"]["input_shape"] = [18]
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw)
    assert e.value.field == "network.layers[1].input_size" and "[4]" in str(e.value) and "(T, input_size)" in str(e.value)


def test_the_shapes_are_inferred_and_stateful_takes_finite_differences():
    desc = spec.parse(sequence_raw("GRU", True, 2))
    assert desc["network"]["layers"][1]["input_size"] == 4 and desc["network"]["output_shape"] == [2]
    from torch_ref.lockstep.run import lockstep
    result = lockstep(desc, fd_steps=2)  # the second iteration's differences start from the carried state
    assert result.ok and result.fd.ok and result.fd.to_json()["iterations_checked"] == 2, result.summary()


# -- planted mistakes: caught at their stage, module and time step -----------------------------------
# the registry's recurrent mistakes (torch_ref/zoo/mistakes_rnn.py, each caught on its own small
# network: tests/test_mistakes.py) planted in the two-layer bidirectional network above, with a
# module before the recurrent one or without: the time step, layer and direction the lockstep names

def _mistakes():
    from torch_ref.zoo import mistakes_rnn as zoo
    T = 6
    return [  # (entry, iteration, stage, tensor in the module, where: the start of `at`)
        (zoo.LSTMGateOrder, 0, "forward", "h", "h at t = 0, layer 0, direction 0,"),
        (zoo.LSTMForgetDerivative, 0, "delta", "h", f"h at t = {T - 2}, layer 1, direction 0,"),
        (zoo.LSTMTruncatedBPTT, 0, "delta", "h", "h at t = 0, layer 1, direction 0,"),
        (zoo.LSTMNoCellGradient, 0, "delta", "h", f"h at t = {T - 3}, layer 1, direction 0,"),
        (zoo.GRUResetBeforeProduct, 0, "forward", "h", "h at t = 0, layer 0, direction 0,"),
        # stateful: the first carried batch; the gradients compared last parameter first
        (zoo.LSTMStateNotDetached, 1, "grad", "bias_hh_l1_reverse", ""),
    ]


@pytest.mark.parametrize("first_linear", [False, True], ids=["first", "after-linear"])
@pytest.mark.parametrize("index", range(6), ids=["lstm-gate-order", "lstm-forget-derivative-dropped",
                                                 "lstm-truncated-bptt", "lstm-no-cell-gradient",
                                                 "gru-reset-before-product", "lstm-state-not-detached"])
def test_a_planted_recurrent_mistake_is_caught_at_its_stage_module_and_time_step(index, first_linear):
    from torch_ref.lockstep.run import lockstep
    from torch_ref.zoo import faulty
    m, iteration, stage, key, where = _mistakes()[index]
    (kind,) = m.needs["module"]
    stateful = m.description()["run"]["stateful"]  # as on its own network
    desc = spec.parse(sequence_raw(kind, stateful, 3, first_linear=first_linear))
    first = lockstep(desc, impl=faulty.build(desc, m.replaces)).first_mismatch
    i = 1 if first_linear else 0
    assert (first.iteration, first.stage, first.name) == (iteration, stage, f"layers.{i}.{key}"), str(first)
    assert first.module == f"layers.{i} ({kind})" and first.at.startswith(where) and bool(first.at) == bool(where)
    assert _unbroken_passes(kind, stateful, first_linear)  # the correct module passes


@functools.cache
def _unbroken_passes(kind, stateful, first_linear):
    """Whether the same network, built through faulty.build with no mistake, passes: one run per
    network, shared by the rows that plant their mistakes in it (6 networks for 12 rows)."""
    from torch_ref.lockstep.run import lockstep
    from torch_ref.zoo import faulty
    desc = spec.parse(sequence_raw(kind, stateful, 3, first_linear=first_linear))
    return lockstep(desc, impl=faulty.build(desc)).ok
