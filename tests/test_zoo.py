"""The zoo: the command, its exit code and JSON, and where its mistakes apply (each mistake caught
where it first shows, and its control: tests/test_mistakes.py)."""
import dataclasses
import json

import numpy as np
import pytest

import manual.conv
import manual.pooling
from torch_ref.cli import main as cli
from torch_ref.zoo import faulty, mistakes_attention, mistakes_embedding, mistakes_layers, mistakes_rnn
from torch_ref.zoo import runner as zoo
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.verdict import STAGES

IDS = [e.id for e in zoo.ENTRIES]


# every entry caught where it says (float64, float32 resync and free), and the same runs passing
# with the engine unbroken: tests/test_mistakes.py, over the whole registry


def test_transposed_gradient_is_caught_by_its_values_on_square_layers():
    """On square weights a transposed gradient has the right shape: it must be caught by its values."""
    e = zoo.entry("weight-grad-transposed")
    desc = e.description()
    assert len(set(desc["network"]["sizes"])) == 1  # every weight is square: the shape cannot give it away
    m = lockstep(desc, impl=e(desc)).first_mismatch
    assert (m.stage, m.name) == ("grad", "layers.1.weight") and "shape" not in str(m), str(m)
    i, j = m.index
    assert i != j and (m.n_bad, m.numel) == (6, 9), str(m)  # the off-diagonal elements, all of them and only them


def test_zoo_command_json_and_exit_code(capsys):
    assert cli.main(["zoo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
    assert out["ok"] is True
    assert [e["id"] for e in out["entries"]] == IDS
    for e in out["entries"]:
        assert e["caught"] and e["as_expected"]
        at = e["caught_at"].pop("at")  # the full wording; the expected time step is its start
        assert e["caught_at"] == {k: v for k, v in e["expected"].items() if k != "at"}
        assert at.startswith(e["expected"]["at"]) and bool(at) == bool(e["expected"]["at"])
        assert e["mismatch"]["stage"] == e["expected"]["stage"]
    assert set(out["stages_covered"]) == set(STAGES) - {"eval"}  # (eval mode's mistakes: tests/test_evaluation.py)


def test_zoo_command_exits_1_when_a_mistake_is_not_caught_where_expected(monkeypatch, capsys):
    wrong = dataclasses.replace(zoo.entry("loss-grad-sign"), stage="grad", tensor="layers.1.weight")
    monkeypatch.setattr(zoo, "ENTRIES", [wrong, zoo.entry("loss-missing-half")])
    assert cli.main(["zoo"]) == 1
    out = capsys.readouterr().out
    assert "CAUGHT; expected iteration 0, grad, layers.1.weight" in out
    assert "1 / 2 mistakes caught where expected" in out


def test_zoo_command_exits_1_when_a_state_mistake_is_caught_at_another_time_step(monkeypatch, capsys):
    """The right stage and tensor are not enough for a recurrent module's mistake: the time step too."""
    right = zoo.entry("lstm-forget-derivative-dropped")
    wrong = dataclasses.replace(right, at="h at t = 1, layer 0, direction 0")
    monkeypatch.setattr(zoo, "ENTRIES", [wrong, right])
    assert cli.main(["zoo"]) == 1
    out = capsys.readouterr().out
    assert "CAUGHT; expected iteration 0, delta, layers.0.h, h at t = 1, layer 0, direction 0" in out
    assert out.count("layers.0 (LSTM): h at t = 3, layer 0, direction 0, sample ") == 2  # where it was
    assert "1 / 2 mistakes caught where expected" in out


def test_applies_follows_the_network():
    worked = faulty.worked()
    applies = {e.id for e in zoo.ENTRIES if e.applies(worked)}
    assert "hidden-error-through-updated-weights" in applies and "frozen-bias-updated" in applies
    assert not applies & {"mean-loss-grad-not-divided-by-batch", "bias-grad-averaged-over-batch",
                          "momentum-buffer-restarted", "adam-without-bias-correction",
                          "cross-entropy-without-target"}


LAYER_DESCRIPTIONS = {"lenet": faulty.shipped("lenet"), "batchnorm_mlp": faulty.shipped("batchnorm_mlp"),
                      "residual": faulty.shipped("residual"), "dropout": faulty.shipped("dropout"),
                      "conv_stack": faulty.conv_stack}


@pytest.mark.parametrize("e", mistakes_layers.LAYER_ZOO, ids=[e.id for e in mistakes_layers.LAYER_ZOO])
def test_a_layer_mistake_applies_only_where_its_module_is(e):
    """A layer list's mistake applies to a network with its module and to no other, so the worked
    example's errata (an MLP) never try it: `backprop-check example` runs only the MLP's."""
    (module,) = e.needs["module"]
    assert e in zoo.ENTRIES and e.applies(e.description())
    assert not e.applies(faulty.worked()) and not e.applies(faulty.classifier())
    for name, described in LAYER_DESCRIPTIONS.items():
        desc = described()
        assert e.applies(desc) == (module in faulty.module_types(desc["network"]["layers"])), name


SEQUENCE_ZOO = mistakes_embedding.EMBEDDING_ZOO + mistakes_rnn.RNN_ZOO + mistakes_attention.ATTENTION_ZOO
SEQUENCE_DESCRIPTIONS = {"lstm": faulty.recurrent_net("LSTM"), "gru": faulty.recurrent_net("GRU"),
                         "rnn": faulty.recurrent_net("RNN"), "attention": mistakes_attention.causal_attention,
                         "copy": mistakes_embedding.copy_padded, "lenet": faulty.shipped("lenet")}


@pytest.mark.parametrize("e", SEQUENCE_ZOO, ids=[e.id for e in SEQUENCE_ZOO])
def test_a_sequence_mistake_applies_only_where_its_module_is(e):
    """An LSTM's mistake applies to a network with an LSTM, not to one with a GRU or an RNN, nor to an
    MLP or a convolutional net; likewise the GRU's, the attention's and the Embedding's."""
    (module,) = e.needs["module"]
    assert e in zoo.ENTRIES and e.applies(e.description()) and not e.applies(faulty.worked())
    for name, described in SEQUENCE_DESCRIPTIONS.items():
        desc = described()
        assert e.applies(desc) == (module in faulty.module_types(desc["network"]["layers"])), name


PLUGINS = [("LSTMForgetDerivative", "LSTM", "iteration 0, stage 'delta', tensor 'layers.0.h', module layers.0 (LSTM): "
            "h at t = 3, layer 0, direction 0, sample "),
           ("GRUResetBeforeProduct", "GRU", "iteration 0, stage 'forward', tensor 'layers.0.h', module layers.0 "
            "(GRU): h at t = 0, layer 0, direction 0, sample ")]


@pytest.mark.parametrize("name,kind,words", PLUGINS, ids=[p[0] for p in PLUGINS])
def test_a_recurrent_mistake_runs_by_name_through_the_command(name, kind, words, tmp_path, capsys):
    """A registry entry is a plug-in target by its name in mistakes_rnn: the command fails naming the
    stage, module and time step; the same description passes with the engine."""
    path = tmp_path / "net.json"
    path.write_text(json.dumps(faulty.recurrent_raw(kind)))
    assert cli.main(["run", str(path), "--impl", f"torch_ref.zoo.mistakes_rnn:{name}"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and words in out, out
    assert cli.main(["run", str(path)]) == 0


CONV_GEOMETRIES = [  # (in, out, kernel, stride, padding, dilation, groups, input H×W)
    (1, 2, 3, 1, 1, 1, 1, (6, 6)), (2, 4, 3, 2, 1, 2, 2, (10, 9)), (3, 3, (2, 3), (2, 1), (0, 2), 1, 3, (7, 5)),
    (2, 2, 3, 1, "same", 2, 1, (6, 7)), (2, 3, 3, 3, 0, 1, 1, (9, 9)),
]


def _conv(cin, cout, k, s, p, d, groups, size, seed=0):
    rng = np.random.default_rng(seed)
    conv = manual.conv.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups)
    conv.weight.data = rng.normal(size=conv.weight.data.shape)
    x = rng.normal(size=(2, cin) + size)
    y = conv.forward(x)
    conv.seen, conv.seen_input = x.shape, x
    return conv, rng.normal(size=y.shape)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_the_conv_mistakes_differ_from_the_engine_only_where_they_say(geometry):
    """The faulty backward's own window code, given the convolution's true stride, dilation and
    crop, is the engine's input gradient: each conv mistake is wrong by the one thing it names
    (and by it alone wherever that thing is not the default)."""
    conv, g = _conv(*geometry)
    right = conv.backward(g)
    assert np.allclose(mistakes_layers.conv_input_gradient(conv, g), right)
    _, _, _, s, p, d, _, _ = geometry
    for changed, faulty_grad in ((s not in (1, (1, 1)), mistakes_layers.conv_input_gradient(conv, g, stride=(1, 1))),
                                 (d != 1, mistakes_layers.conv_input_gradient(conv, g, dilation=(1, 1))),
                                 (p not in (0, (0, 0)), mistakes_layers.conv_input_gradient(conv, g, crop=(0, 0)))):
        assert faulty_grad.shape == right.shape and np.allclose(faulty_grad, right) != changed


def test_the_weight_gradient_of_the_last_position_is_the_whole_one_for_a_single_position():
    """With one output position (the kernel covers the padded input) the last position's gradient
    is the sum over positions; with more it is not."""
    built = faulty.stand_ins(mistakes_layers.ConvWeightGradNotSummed.replaces)[manual.conv.Conv2d]
    for size, single in (((3, 2), True), ((5, 4), False)):
        engine, g = _conv(2, 3, (3, 2), 1, (0, 1), (1, 3), 1, size)
        engine.backward(g)
        planted = built(2, 3, (3, 2), padding=(0, 1), dilation=(1, 3))
        planted.weight.data = engine.weight.data
        planted.forward(engine.seen_input)
        planted.backward(g)
        assert np.allclose(planted.weight.grad, engine.weight.grad) == single


@pytest.mark.parametrize("kernel,stride,size", [(2, None, (6, 6)), (3, 2, (7, 8)), ((2, 3), 1, (5, 6))], ids=str)
def test_the_pooling_mistakes_send_the_gradient_to_the_whole_window(kernel, stride, size):
    """Average pooling's gradient undivided is the engine's times the window's size; max pooling's
    whole-window gradient is the same sum of windows (the engine's average pool times its size)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3) + size)
    pool = manual.pooling.AvgPool2d(kernel, stride)
    g = rng.normal(size=pool.forward(x).shape)
    window = np.prod(mistakes_layers.pair(kernel))
    for planted, owner in ((mistakes_layers.AvgPoolGradNotDivided, manual.pooling.AvgPool2d),
                           (mistakes_layers.MaxPoolGradToWholeWindow, manual.pooling.MaxPool2d)):
        faulty_pool = faulty.stand_ins(planted.replaces)[owner](kernel, stride)
        faulty_pool.forward(x)
        assert np.allclose(faulty_pool.backward(g), window * pool.backward(g))


def test_the_docs_zoo_table_is_the_registrys():
    """docs/zoo.md's table lists the zoo's mistakes in its order, each caught where the registry
    says (iteration, stage, tensor, and a state's place): a typed table would drift from the code."""
    import re
    from pathlib import Path
    from torch_ref.zoo import mistakes
    rows = [line.split(" | ") for line in (Path(__file__).parent.parent / "docs" / "zoo.md").read_text().splitlines()
            if re.match(r"\| `[a-z0-9-]+` \|", line)]
    assert [r[0][3:-1] for r in rows] == [m.id for m in mistakes.ZOO]
    for row, m in zip(rows, mistakes.ZOO):
        shown = f"{'**%d**' % m.iteration if m.iteration else m.iteration}, {m.stage}, `{m.tensor}`"
        assert row[-1] == shown + (f": {m.at.rstrip(', ')}" if m.at else "") + " |", m.id
    count = re.search(r"(\d+) mistakes: (\d+) in a multilayer perceptron.*?(\d+) in the\s+modules of a layer list.*?"
                      r"then (\d+) in the sequence modules", (Path(__file__).parent.parent / "docs" / "zoo.md").read_text(), re.S)
    assert count and int(count[1]) == len(mistakes.ZOO) == int(count[2]) + int(count[3]) + int(count[4])
