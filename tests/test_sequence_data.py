"""The sequence sets (manual/sequences.py) and integer token inputs through the pipeline: each set's
layout against its definition, recomputed here; chars' batchify layout (sample i + streams
continues sample i); the text ships with the package; [data] sequence refused naming the field;
token ids kept int64 by the data, the twin, shadow mode, finite differences and a plug-in; a copy
task and the adding problem in lockstep; the Embedding's zoo mistake caught where it says."""
import copy
import importlib.resources
import json

import numpy as np
import pytest
import torch

import manual.data
import manual.trainer
from manual import sequences
from torch_ref.cli import main as cli_main
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import Twin
from torch_ref.zoo.mistakes_embedding import COPY_PADDED, EmbeddingPaddingGetsGradient

torch.set_num_threads(1)
ADDING = {"network": {"input_shape": [6, 2], "loss": "mse", "layers": [
              {"type": "Linear", "out_features": 3}, {"type": "Tanh"}, {"type": "Flatten"},  # (6, 3) -> (18,)
              {"type": "Linear", "out_features": 1}]},
          "init": {"seed": 2}, "optimizer": {"name": "sgd", "lr": 0.1},
          "data": {"sequence": {"name": "adding", "n": 16, "length": 6, "seed": 3}, "batch_size": 4},
          "run": {"steps": 6}}


def described(raw, **changes):
    raw = copy.deepcopy(raw)
    for path, value in changes.items():
        *outer, last = path.split("__")
        t = raw
        for key in outer:
            t = t[key]
        t[last] = value
    return spec.parse(raw)


def test_adding_marks_one_position_in_each_half_and_sums_them():
    x, y = sequences.adding(50, 9, seed=4)
    assert x.shape == (50, 9, 2) and y.shape == (50, 1) and x.dtype == y.dtype == np.float64
    marks = x[:, :, 1]
    assert set(np.unique(marks)) == {0.0, 1.0} and (marks.sum(1) == 2).all()
    assert (marks[:, :4].sum(1) == 1).all() and (marks[:, 4:].sum(1) == 1).all()
    assert ((x[:, :, 0] >= 0) & (x[:, :, 0] < 1)).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * marks).sum(1))
    again, other = sequences.adding(50, 9, seed=4), sequences.adding(50, 9, seed=5)
    assert np.array_equal(again[0], x) and not np.array_equal(other[0], x)


def test_copy_gives_the_string_back_after_the_delimiter():
    x, y = sequences.copy(30, 11, symbols=5, string=3, seed=1)
    assert x.shape == y.shape == (30, 11) and x.dtype == y.dtype == np.int64
    s = x[:, :3]
    assert ((s >= 2) & (s < 7)).all() and len(np.unique(s)) == 5  # the symbols, ids 2 ... symbols + 1
    assert (x[:, 3] == sequences.COPY_DELIMITER).all() and (x[:, 4:] == sequences.COPY_BLANK).all()
    assert (y[:, :4] == sequences.COPY_BLANK).all() and np.array_equal(y[:, 4:7], s) and (y[:, 7:] == 0).all()
    assert sequences.vocabulary_size("copy", {"symbols": 5}) == 7


def test_the_text_ships_in_the_package_and_its_vocabulary_is_its_sorted_characters():
    shipped = (importlib.resources.files("manual") / "texts" / "seed.txt").read_text(encoding="utf-8")
    assert shipped == sequences.text() and len(shipped) > 10000
    assert list(sequences.vocabulary()) == sorted(set(shipped))
    assert sequences.vocabulary_size("chars", {}) == len(set(shipped))


@pytest.mark.parametrize("n,length,streams,seed", [(12, 7, 4, 0), (10, 16, 3, 2), (5, 40, 1, 1)])
def test_chars_windows_are_the_text_and_continue_stream_by_stream(n, length, streams, seed):
    x, y = sequences.chars(n, length, streams, seed)
    assert x.shape == y.shape == (n, length) and x.dtype == np.int64
    vocab, text = sequences.vocabulary(), sequences.text()
    decoded = ["".join(vocab[i] for i in row) for row in x]
    big = sequences.stream_length(streams)
    for i, row in enumerate(decoded):
        start = text.index(row) if text.count(row) == 1 else None
        if start is not None:  # (the stream's own cut: i % streams, within its L characters)
            assert (i % streams) * big <= start < (i % streams + 1) * big
    assert np.array_equal(x[:, 1:], y[:, :-1])  # y: the next character at each position
    for i in range(n - streams):  # sample i + streams continues sample i where it stopped
        assert x[i + streams, 0] == y[i, -1]
        assert text.find(decoded[i] + decoded[i + streams]) >= 0


def test_chars_refuses_more_windows_than_the_text_holds():
    most = sequences.max_chars_samples(32, 8)
    sequences.chars(most, 32, 8)
    with pytest.raises(ValueError):
        sequences.chars(most + 1, 32, 8)


def test_the_data_of_a_token_set_stays_int64_in_every_dtype():
    for dtype in (np.float64, np.float32):
        x, y = next(manual.data.batches(described(COPY_PADDED), dtype))
        assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (8, 12)
        x, y = next(manual.data.batches(described(ADDING), dtype))
        assert x.dtype == y.dtype == dtype and x.shape == (4, 6, 2) and y.shape == (4, 1)


def test_chars_is_cut_into_batch_size_streams():
    desc = spec.load("char_embedding")
    x, y = manual.data.training_set(desc)
    size = desc["data"]["batch_size"]
    assert np.array_equal(x[size:2 * size, 0], y[:size, -1])


def test_the_twin_takes_token_ids_as_int64_without_a_gradient():
    desc = described(COPY_PADDED)
    trainer = manual.trainer.build(desc)
    twin = Twin(desc, trainer.state_dict())
    x, y = next(manual.data.batches(desc))
    xt = twin.tensor(x)
    assert xt.dtype == torch.int64 and not xt.requires_grad
    r = twin.train_step(x, y)
    assert r["output"].shape == (8, 12, 10) and set(r["grads"]) == {"layers.0.weight", "layers.1.weight",
                                                                     "layers.1.bias"}


@pytest.mark.parametrize("dtype,mode", [("float64", "free"), ("float32", "resync"), ("float32", "shadow")])
@pytest.mark.parametrize("raw", [COPY_PADDED, ADDING], ids=["copy", "adding"])
def test_a_sequence_set_passes_in_lockstep(raw, dtype, mode):
    result = lockstep(described(raw, run__dtype=dtype), mode=mode)
    assert result.ok and result.steps_checked == raw["run"]["steps"], result.summary()


def test_finite_differences_agree_on_token_inputs():
    """Only parameters are perturbed (token ids have no neighbours): every parameter agrees three ways."""
    result = lockstep(described(COPY_PADDED, run__steps=2), fd_steps=1)
    assert result.ok and result.fd.ok, result.summary()
    assert set(result.fd.tensors()) == {"layers.0.weight", "layers.1.weight", "layers.1.bias"}


class SeesInputs:
    """A plug-in: the manual engine, recording the dtype of every x it is handed."""

    def __init__(self, desc):
        self.inner, self.seen = manual.trainer.build(desc), []

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def train_step(self, x, y):
        self.seen.append(x.dtype)
        return self.inner.train_step(x, y)


def test_a_plugin_is_handed_token_ids_as_int64():
    desc = described(COPY_PADDED)
    impl = SeesInputs(desc)
    assert lockstep(desc, impl=impl).ok
    assert impl.seen == [np.dtype(np.int64)] * 3


def test_the_padding_mistake_is_caught_at_its_row_and_the_engine_passes():
    desc = EmbeddingPaddingGetsGradient.described()
    m = lockstep(desc, impl=EmbeddingPaddingGetsGradient(desc)).first_mismatch
    assert (m.iteration, m.stage, m.name, m.index[0]) == (0, "grad", "layers.0.weight", 0), str(m)
    assert lockstep(desc).ok


EMB = {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 6}
LIN = {"type": "Linear", "out_features": 10}
BAD = [  # (changes to COPY_PADDED, the field named)
    ({"data__sequence__name": "addition"}, "data.sequence.name"),
    ({"data__sequence__symbol": 3}, "data.sequence.symbol"),
    ({"data__sequence__length": 8}, "data.sequence.length"),  # < 2·string + 1
    ({"data__sequence__n": 0}, "data.sequence.n"),
    ({"network__input_shape": [11]}, "data.sequence.length"),
    ({"network__layers": [{**EMB, "num_embeddings": 9}, LIN]}, "network.layers[0].num_embeddings"),
    ({"network__layers": [EMB, {**LIN, "out_features": 9}]}, "data.sequence.name"),
    ({"network__layers": [EMB, {"type": "Flatten"}, {**LIN, "out_features": 10}]}, "data.sequence.name"),
    ({"network__layers": [{**EMB, "padding_idx": 10}, LIN]}, "network.layers[0].padding_idx"),
    ({"network__layers": [{**EMB, "max_norm": 1.0}, LIN]}, "network.layers[0].max_norm"),
    ({"network__layers": [{**EMB, "sparse": True}, LIN]}, "network.layers[0].sparse"),
    ({"network__layers": [EMB, LIN, {**EMB, "num_embeddings": 10}]}, "network.layers[2].type"),
    ({"network__loss": "mse"}, "network.layers"),
    ({"data": {"random": {"n": 8}, "batch_size": 4}}, "network.layers[0].type"),
    ({"network__input_shape": [12, 2], "network__layers": [{"type": "Flatten"}, LIN]}, "data.sequence.length"),
]


@pytest.mark.parametrize("changes,field", BAD, ids=[f for _, f in BAD])
def test_a_bad_sequence_description_exits_2_naming_the_field(changes, field, tmp_path, capsys):
    raw = copy.deepcopy(COPY_PADDED)
    for path, value in changes.items():
        *outer, last = path.split("__")
        t = raw
        for key in outer:
            t = t[key]
        t[last] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    assert cli_main.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f" {field}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_chars_with_more_samples_than_the_text_holds_names_n(tmp_path, capsys):
    raw = {"network": {"input_shape": [32], "loss": "cross_entropy",
                       "layers": [{"type": "Embedding", "num_embeddings": 466, "embedding_dim": 466}]},
           "init": {"seed": 0}, "optimizer": {"name": "sgd"},
           "data": {"sequence": {"name": "chars", "n": 10000, "length": 32}, "batch_size": 8}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    assert cli_main.main(["run", str(path)]) == 2
    assert " data.sequence.n:" in capsys.readouterr().err
