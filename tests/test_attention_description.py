"""MultiheadAttention and TransformerEncoderLayer in a description's layer list: the registry's
arguments against torch's signatures, the refusals (one line naming the field), torch's
initialisation drawn by manual/init.py, and a causal self-attention network in lockstep with the
twin (float64 free-running, float32 re-synced)."""
import inspect
import json

import numpy as np
import pytest
import torch
from torch import nn

from manual.init import layered_state
from manual.names import LAYER_INPUT, LAYER_REGISTRY, REQUIRED
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep

torch.set_num_threads(1)
KINDS = ("MultiheadAttention", "TransformerEncoderLayer")
MHA = {"type": "MultiheadAttention", "num_heads": 2, "batch_first": True, "causal": True}
ENCODER = {"type": "TransformerEncoderLayer", "nhead": 2, "dim_feedforward": 12, "dropout": 0.0, "batch_first": True,
           "causal": True}


def description(layers, input_shape=(5, 8), dtype="float64", steps=15):
    return {"network": {"input_shape": list(input_shape), "loss": "cross_entropy",
                        "layers": [*layers, {"type": "Flatten"}, {"type": "Linear", "out_features": 3}]},
            "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.2},
            "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4}, "run": {"steps": steps, "dtype": dtype}}


@pytest.mark.parametrize("kind", KINDS)
def test_registry_arguments_are_torchs(kind):
    """Every argument but the project's own `causal` is torch's, with torch's default (REQUIRED:
    torch has none); the input size is inferred."""
    entry = LAYER_REGISTRY[kind]
    params = inspect.signature(getattr(nn, kind)).parameters
    assert entry.own == ("causal",)
    for arg, default in entry.torch_defaults().items():
        expected = inspect.Parameter.empty if default == REQUIRED else default
        theirs = params[arg].default
        if arg == "activation":  # torch's default is the function F.relu, which the string "relu" names
            theirs = theirs.__name__
        assert theirs == expected, arg
    assert LAYER_INPUT[kind] in entry.args


@pytest.mark.parametrize("dtype, mode", [("float64", "free"), ("float32", "resync")])
@pytest.mark.parametrize("norm_first, activation", [(False, "relu"), (True, "gelu")])
def test_a_causal_self_attention_network_passes_in_lockstep(norm_first, activation, dtype, mode):
    layers = [MHA, {**ENCODER, "norm_first": norm_first, "activation": activation}]
    desc = spec.parse(description(layers, dtype=dtype))
    assert desc["network"]["layers"][0]["embed_dim"] == 8 and desc["network"]["layers"][1]["d_model"] == 8
    result = lockstep(desc, mode=mode)
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 15 and np.isfinite(result.final_loss["reference"])


def test_a_broken_attention_is_caught_in_lockstep(monkeypatch):
    """The negative control of the lockstep above: the softmax's backward off by a factor."""
    from manual import attention

    def half_the_jacobian(self, grad_attn):
        return self.attn * (grad_attn - 0.5 * (grad_attn * self.attn).sum(axis=-1, keepdims=True))

    monkeypatch.setattr(attention.MultiheadAttention, "softmax_backward", half_the_jacobian)
    result = lockstep(spec.parse(description([MHA])), mode="free")
    assert not result.ok and result.first_mismatch.iteration == 0


def test_torchs_initialisation_is_drawn():
    """in_proj_weight xavier_uniform over (3E, E), out_proj.weight U(±1/√E), biases zero; the encoder
    layer's linears as a Linear's; its norms 1 and 0."""
    desc = spec.parse(description([MHA, ENCODER], input_shape=(5, 16)))
    state = layered_state(desc["network"]["layers"], desc["init"])
    w = state["layers.0.in_proj_weight"]
    assert w.shape == (48, 16) and np.abs(w).max() <= np.sqrt(6 / 64) and np.abs(w).max() > 0.9 * np.sqrt(6 / 64)
    out = state["layers.1.self_attn.out_proj.weight"]
    assert np.abs(out).max() <= 0.25 and np.abs(out).max() > 0.2
    for name in ("layers.0.in_proj_bias", "layers.0.out_proj.bias", "layers.1.self_attn.in_proj_bias",
                 "layers.1.norm1.bias"):
        assert not state[name].any(), name
    assert (state["layers.1.norm2.weight"] == 1).all()
    assert np.abs(state["layers.1.linear2.weight"]).max() <= 1 / np.sqrt(12) and state["layers.1.linear1.bias"].any()
    assert all(v.any() for k, v in state.items() if k.endswith("weight")), "a weight left at zero"


BAD = [
    ([{**MHA, "batch_first": False}], "network.layers[0].batch_first"),
    ([{k: v for k, v in ENCODER.items() if k != "batch_first"}], "network.layers[0].batch_first"),
    ([{**MHA, "num_heads": 3}], "network.layers[0].num_heads"),
    ([{**MHA, "num_heads": 0}], "network.layers[0].num_heads"),
    ([{**MHA, "embed_dim": 6}], "network.layers[0].embed_dim"),
    ([{**MHA, "dropout": 0.1}], "network.layers[0].dropout"),
    ([{k: v for k, v in ENCODER.items() if k != "dropout"}], "network.layers[0].dropout"),  # torch's 0.1
    ([{**ENCODER, "nhead": 5}], "network.layers[0].nhead"),
    ([{**ENCODER, "activation": "tanh"}], "network.layers[0].activation"),
    ([{**MHA, "add_bias_kv": True}], "network.layers[0].add_bias_kv"),
    ([{**MHA, "vdim": 4}], "network.layers[0].vdim"),
    ([{**MHA, "causal": "yes"}], "network.layers[0].causal"),
    ([{"type": "Flatten"}, {**MHA, "embed_dim": 40, "num_heads": 2}], "network.layers[1]"),  # samples not (T, E)
]


@pytest.mark.parametrize("layers, field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_a_bad_attention_module_exits_2_naming_the_field(layers, field, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(description(layers)))
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f" {field}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
