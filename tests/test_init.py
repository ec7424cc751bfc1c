"""Initialisation schemes drawn in numpy: bounds and standard deviations against torch.nn.init's
formulas (written out here, with torch's calculate_gain) and against torch's own draws."""
import math

import numpy as np
import pytest
import torch

import manual.init
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep

FAN_IN, FAN_OUT = 200, 300  # not square, so fan_in and fan_out give different answers


def desc_for(init, sizes=(FAN_IN, FAN_OUT), bias="per-neuron", activation="tanh"):
    return spec.parse({"network": {"sizes": list(sizes), "activation": activation, "bias": bias, "loss": "mse"},
                       "init": {"seed": 7, **init}, "optimizer": {"name": "sgd"}, "data": {"random": {"n": 4}}})


def gain(nonlinearity, param=None):
    return torch.nn.init.calculate_gain(nonlinearity, param)


# (init section, "uniform" bound or "normal" std, torch's own initialiser for the same)
SCHEMES = [
    ({}, ("uniform", 1 / math.sqrt(FAN_IN)), lambda w: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))),
    ({"scheme": "xavier_uniform"}, ("uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))), torch.nn.init.xavier_uniform_),
    ({"scheme": "glorot_uniform", "gain": 0.5}, ("uniform", 0.5 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
     lambda w: torch.nn.init.xavier_uniform_(w, gain=0.5)),
    ({"scheme": "xavier_uniform", "nonlinearity": "tanh"}, ("uniform", gain("tanh") * math.sqrt(6 / (FAN_IN + FAN_OUT))),
     lambda w: torch.nn.init.xavier_uniform_(w, gain=gain("tanh"))),
    ({"scheme": "xavier_normal"}, ("normal", math.sqrt(2 / (FAN_IN + FAN_OUT))), torch.nn.init.xavier_normal_),
    ({"scheme": "xavier_normal", "nonlinearity": "leaky_relu", "param": 0.2},
     ("normal", gain("leaky_relu", 0.2) * math.sqrt(2 / (FAN_IN + FAN_OUT))),
     lambda w: torch.nn.init.xavier_normal_(w, gain=gain("leaky_relu", 0.2))),
    ({"scheme": "kaiming_uniform"}, ("uniform", math.sqrt(3) * gain("leaky_relu", 0) / math.sqrt(FAN_IN)),
     torch.nn.init.kaiming_uniform_),
    ({"scheme": "he_uniform", "mode": "fan_out", "nonlinearity": "relu"},
     ("uniform", math.sqrt(3) * math.sqrt(2) / math.sqrt(FAN_OUT)),
     lambda w: torch.nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")),
    ({"scheme": "kaiming_uniform", "a": 0.3}, ("uniform", math.sqrt(3) * math.sqrt(2 / 1.09) / math.sqrt(FAN_IN)),
     lambda w: torch.nn.init.kaiming_uniform_(w, a=0.3)),
    ({"scheme": "kaiming_normal", "nonlinearity": "tanh"}, ("normal", (5 / 3) / math.sqrt(FAN_IN)),
     lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="tanh")),
    ({"scheme": "he_normal", "mode": "fan_out", "nonlinearity": "selu"}, ("normal", 0.75 / math.sqrt(FAN_OUT)),
     lambda w: torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="selu")),
    ({"scheme": "kaiming_normal", "nonlinearity": "sigmoid"}, ("normal", 1 / math.sqrt(FAN_IN)),
     lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="sigmoid")),
]
# A sample of n = 60000 has a standard deviation within ±0.3% (normal) or ±0.2% (uniform) of the
# true one at one standard error; 1.5% is 5 standard errors, while a wrong fan (200 vs 300) is 22%
# off, a missing gain at least 25% and a uniform bound mistaken for a std 73%.
STD_RTOL = 0.015


@pytest.mark.parametrize("init,expected,torch_init", SCHEMES, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_weight_distribution(init, expected, torch_init):
    w = manual.init.initial_state(desc_for(init))["layers.0.weight"]
    assert w.shape == (FAN_OUT, FAN_IN)
    kind, value = expected
    std = value / math.sqrt(3) if kind == "uniform" else value
    n = w.size
    assert abs(w.mean()) < 5 * std / math.sqrt(n)
    assert w.std() == pytest.approx(std, rel=STD_RTOL)
    if kind == "uniform":
        assert np.abs(w).max() <= value
        assert np.abs(w).max() > 0.999 * value  # P(all 60000 inside 0.999·bound) = 0.999^60000 ≈ 1e-26
    else:
        assert np.mean(np.abs(w) < std) == pytest.approx(0.6827, abs=0.01)  # normal, not uniform
        assert np.abs(w).max() > 3.5 * std
    theirs = torch_init(torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64)).numpy()
    assert w.std() == pytest.approx(theirs.std(), rel=2 * STD_RTOL)  # torch's own draw, same law


@pytest.mark.parametrize("scheme", ["linear-default", "xavier_uniform", "kaiming_normal"])
def test_biases_linear_default_or_zeros(scheme):
    b = manual.init.initial_state(desc_for({"scheme": scheme}, sizes=(FAN_IN, 5000)))["layers.0.bias"]
    bound = 1 / math.sqrt(FAN_IN)
    assert b.shape == (5000,) and np.abs(b).max() <= bound and np.abs(b).max() > 0.99 * bound
    assert b.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    zero = manual.init.initial_state(desc_for({"scheme": scheme, "bias": "zeros"}, sizes=(FAN_IN, 50)))
    assert not zero["layers.0.bias"].any() and zero["layers.0.weight"].any()
    shared = manual.init.initial_state(desc_for({"scheme": scheme}, sizes=(3, 4, 2), bias="shared-frozen"))
    assert shared["layers.1.bias"].shape == () and abs(shared["layers.1.bias"]) <= 1 / math.sqrt(4)


def test_linear_default_unchanged_and_seeded():
    """The default scheme keeps the draws the specs and tests have always had; seeds differ."""
    d = desc_for({}, sizes=(3, 4, 2))
    rng = np.random.default_rng(7)
    expected = rng.uniform(-1 / math.sqrt(3), 1 / math.sqrt(3), (4, 3))
    np.testing.assert_array_equal(manual.init.initial_state(d)["layers.0.weight"], expected)
    a = manual.init.initial_state(desc_for({"scheme": "xavier_normal"}, sizes=(3, 4, 2)))
    b = manual.init.initial_state(desc_for({"scheme": "xavier_normal"}, sizes=(3, 4, 2)))
    np.testing.assert_array_equal(a["layers.1.weight"], b["layers.1.weight"])
    c = manual.init.initial_state({**d, "init": {**d["init"], "seed": 8}})
    assert not np.array_equal(c["layers.0.weight"], expected)


@pytest.mark.parametrize("nonlinearity,param", [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                                                ("leaky_relu", None), ("leaky_relu", 0.3), ("selu", None)])
def test_calculate_gain_is_torchs(nonlinearity, param):
    assert manual.init.calculate_gain(nonlinearity, param) == pytest.approx(gain(nonlinearity, param), rel=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", [{"scheme": "xavier_uniform", "nonlinearity": "tanh"},
                                  {"scheme": "kaiming_normal", "nonlinearity": "relu", "bias": "zeros"}], ids=str)
def test_lockstep_from_a_scheme(init, dtype):
    d = spec.parse({"network": {"sizes": [4, 16, 8, 2], "activation": ["tanh", "relu", "identity"], "loss": "mse"},
                    "init": {"seed": 3, **init}, "optimizer": {"name": "adam", "lr": 0.01},
                    "data": {"random": {"n": 12}, "batch_size": 5}, "run": {"steps": 30, "dtype": dtype}})
    result = lockstep(d, mode="resync" if dtype == "float32" else "free")
    assert result.ok, str(result.first_mismatch)


@pytest.mark.parametrize("init,field", [
    ({"scheme": "orthogonal"}, "init.scheme"),
    ({"scheme": "xavier_uniform", "gain": 1.0, "nonlinearity": "tanh"}, "init.gain"),
    ({"scheme": "xavier_uniform", "mode": "fan_out"}, "init.mode"),
    ({"scheme": "kaiming_normal", "mode": "fan_avg"}, "init.mode"),
    ({"scheme": "kaiming_normal", "nonlinearity": "swish"}, "init.nonlinearity"),
    ({"scheme": "kaiming_normal", "gain": 2.0}, "init.gain"),
    ({"scheme": "xavier_normal", "param": 0.1}, "init.param"),
    ({"bias": "ones"}, "init.bias"),
])
def test_bad_init_names_the_field(init, field):
    with pytest.raises(spec.SpecError) as e:
        desc_for(init, sizes=(2, 2))
    assert e.value.field == field
