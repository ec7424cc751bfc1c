"""A network given as a list of torch.nn modules ([network] layers): the shipped layer lists pass
in lockstep, the state-dict names are torch's nn.Sequential's, bad lists are refused naming the
field, dropout's handed mask is torch's dropout, and a plug-in gets the masks only with dropout."""
import numpy as np
import pytest
import torch
from torch import nn

import manual.trainer
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.description.files import bundled_path
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.layers import MaskedDropout, make_module
from torch_ref.zoo.mistakes_layers import LAYER_ZOO

LAYER_SPECS = ["lenet", "batchnorm_mlp", "residual", "dropout", "char_embedding", "char_lstm", "gru_adding",
               "birnn_classifier", "char_transformer"]


def described(name, steps, dtype="float64"):
    desc = spec.load(bundled_path(name))
    return spec.override(desc, steps=steps, dtype=dtype)


@pytest.mark.parametrize("name", LAYER_SPECS)
def test_a_shipped_layer_list_passes_and_compares_every_stage(name):
    result = lockstep(described(name, 12))
    assert result.ok, result.summary()
    stages = {"forward", "output", "loss", "delta", "grad", "param"} | ({"buffer"} if name == "batchnorm_mlp" else set())
    assert stages <= set(result.stats)


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYER_SPECS)
@pytest.mark.parametrize("dtype,mode", [("float64", "free"), ("float32", "resync"), ("float32", "shadow")])
def test_a_shipped_layer_list_passes_200_iterations(name, dtype, mode):
    result = lockstep(described(name, 200, dtype), mode=mode)
    assert result.ok and result.steps_checked == 200, result.summary()


def test_the_state_dict_names_are_torch_sequentials():
    """The manual engine's state dict, names and order, is what torch's nn.Sequential held as
    `layers` gives for the same modules (torch's own Dropout; the Residual as the twin's)."""
    for name in LAYER_SPECS:
        desc = described(name, 1)
        holder = nn.Module()
        holder.layers = nn.Sequential(*(make_module(m, {}) for m in desc["network"]["layers"]))
        ours = manual.trainer.build(desc).state_dict()
        assert list(ours) == list(holder.state_dict()), name
        assert all(ours[k].shape == tuple(v.shape) for k, v in holder.state_dict().items()), name


def test_masked_dropout_is_torchs_dropout_for_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    for p in (0.2, 0.5, 0.9):
        y = nn.Dropout(p)(x)
        m = MaskedDropout(p)
        m.mask = y != 0
        assert torch.equal(m(x), y)


LENET = [{"type": "Conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "Flatten"},
         {"type": "Linear", "out_features": 3}]
BAD = [
    ([{"type": "Conv3d"}], "network.layers[0].type"),
    ([{"type": "Conv2d", "out_channels": 2, "kernel_size": 3, "stides": 2}], "network.layers[0].stides"),
    ([{"type": "Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 3}], "network.layers[0].in_channels"),
    ([{"type": "Conv2d", "out_channels": 2}], "network.layers[0].kernel_size"),
    ([{"type": "Conv2d", "out_channels": 2, "kernel_size": 9}], "network.layers[0]"),
    ([*LENET[:2], {"type": "Linear", "in_features": 10, "out_features": 3}], "network.layers[2].in_features"),
    ([{"type": "Residual", "layers": [{"type": "Conv2d", "out_channels": 3, "kernel_size": 1}]}],
     "network.layers[0].layers"),
    ([{"type": "Flatten", "start_dim": 0}], "network.layers[0].start_dim"),
    (LENET[:1], "network.layers"),
]


@pytest.mark.parametrize("layers,field", BAD, ids=[f for _, f in BAD])
def test_a_bad_layer_list_exits_2_naming_the_field(layers, field, tmp_path, capsys):
    import json
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"network": {"input_shape": [1, 6, 6], "layers": layers, "loss": "cross_entropy"},
                                "init": {"seed": 0}, "optimizer": {"name": "sgd"},
                                "data": {"random": {"n": 4}, "batch_size": 2}}))
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f" {field}:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_given_input_size_that_does_not_fit_names_both_shapes():
    raw = {"network": {"input_shape": [3, 4, 4], "layers": [{"type": "BatchNorm2d", "num_features": 4},
                                                            {"type": "Flatten"}, {"type": "Linear", "out_features": 2}],
                       "loss": "mse"}, "init": {"seed": 0}, "optimizer": {"name": "sgd"},
           "data": {"random": {"n": 4}, "batch_size": 2}}
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw)
    assert e.value.field == "network.layers[0].num_features" and "[3, 4, 4]" in str(e.value) and "= 3" in str(e.value)


class Recording(manual.trainer.Trainer):
    """The manual engine as a plug-in, recording the masks it is handed."""

    def train_step(self, x, y, **kw):
        self.calls.append(kw)
        return super().train_step(x, y, **kw)


@pytest.mark.parametrize("name,dropout", [("dropout", True), ("lenet", False)])
def test_a_plugin_gets_masks_only_when_the_network_has_dropout(name, dropout):
    desc = described(name, 3)
    impl = Recording(desc)
    impl.calls = []
    assert lockstep(desc, impl=impl).ok
    assert len(impl.calls) == 3
    if dropout:
        masks = [c["masks"] for c in impl.calls]
        assert list(masks[0]) == ["layers.2", "layers.5"] and masks[0]["layers.2"].dtype == np.bool_
        assert masks[0]["layers.2"].shape == (8, 16) and not np.array_equal(masks[0]["layers.2"], masks[1]["layers.2"])
    else:
        assert impl.calls == [{}] * 3


def test_a_mismatch_names_the_module_and_its_type():
    m = next(m for m in LAYER_ZOO if m.tensor == "layers.5")
    result = lockstep(m.described(), impl=m(m.described()))
    assert result.first_mismatch.module == "layers.5 (Flatten)"
    assert "module layers.5 (Flatten)" in str(result.first_mismatch)
