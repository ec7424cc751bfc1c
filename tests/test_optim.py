"""Optimizers: lockstep with their state compared at every iteration, torch's defaults, torch's
refusals, the resync restart of the optimizer state, and the planted wrong Adams' shared body (the broken
update rules themselves: torch_ref/zoo/planted.py, run by tests/test_mistakes.py)."""

import numpy as np
import pytest
import torch

import manual.init
import manual.optim
import manual.trainer
from torch_ref.zoo import faulty, planted
from torch_ref.description import spec
from torch_ref.zoo.faulty import broken_adam
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import Twin
from torch_ref.testing import compare, tolerance

from conftest import make_desc

TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
         "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
         "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam}

# (optimizer section, the state buffers torch keeps for it)
OPTIMIZERS = [
    ({"name": "sgd", "lr": 0.1}, set()),
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}, {"momentum_buffer"}),
    ({"name": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "maximize": True}, {"momentum_buffer"}),
    ({"name": "adam", "lr": 0.01}, {"step", "exp_avg", "exp_avg_sq"}),
    ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True},
     {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ({"name": "adamw", "lr": 0.02, "weight_decay": 0.3}, {"step", "exp_avg", "exp_avg_sq"}),
    ({"name": "adamw", "lr": 0.02, "amsgrad": True, "maximize": True},
     {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    ({"name": "rmsprop", "lr": 0.01}, {"step", "square_avg"}),
    ({"name": "rmsprop", "lr": 0.005, "alpha": 0.9, "weight_decay": 0.1, "momentum": 0.5, "centered": True},
     {"step", "square_avg", "momentum_buffer", "grad_avg"}),
    ({"name": "adagrad", "lr": 0.1}, {"step", "sum"}),
    ({"name": "adagrad", "lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.2,
      "eps": 1e-6}, {"step", "sum"}),
    ({"name": "adadelta"}, {"step", "square_avg", "acc_delta"}),
    ({"name": "adadelta", "lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.1, "maximize": True},
     {"step", "square_avg", "acc_delta"}),
    ({"name": "nadam", "lr": 0.01}, {"step", "mu_product", "exp_avg", "exp_avg_sq"}),
    ({"name": "nadam", "lr": 0.01, "betas": [0.8, 0.99], "weight_decay": 0.1, "momentum_decay": 0.01,
      "decoupled_weight_decay": True}, {"step", "mu_product", "exp_avg", "exp_avg_sq"}),
    ({"name": "nadam", "lr": 0.01, "weight_decay": 0.2}, {"step", "mu_product", "exp_avg", "exp_avg_sq"}),
    ({"name": "radam", "lr": 0.01}, {"step", "exp_avg", "exp_avg_sq"}),  # ρ_t > 5 from t = 6 on
    ({"name": "radam", "lr": 0.01, "betas": [0.9, 0.9], "weight_decay": 0.1, "decoupled_weight_decay": True,
      "maximize": True}, {"step", "exp_avg", "exp_avg_sq"}),  # β2 = 0.9: ρ∞ = 19, rectified from t = 3
    ({"name": "rmsprop", "lr": 0.01, "eps": 1e-3, "eps_inside_sqrt": True}, {"step", "square_avg"}),
    ({"name": "rmsprop", "lr": 0.005, "eps": 1e-3, "momentum": 0.5, "centered": True, "eps_inside_sqrt": True},
     {"step", "square_avg", "momentum_buffer", "grad_avg"}),
    ({"name": "adagrad", "lr": 0.1, "eps": 1e-3, "lr_decay": 0.05, "eps_inside_sqrt": True}, {"step", "sum"}),
]


def with_optimizer(desc, opt, **run):
    return {**desc, "optimizer": spec.parse({**_raw(desc), "optimizer": opt})["optimizer"],
            "run": {**desc["run"], **run}}


def _raw(desc):
    return {"network": {k: desc["network"][k] for k in ("sizes", "activation", "bias", "loss")},
            "init": {"seed": 0}, "data": {"random": {"n": 4, "seed": 0}}}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt,buffers", OPTIMIZERS, ids=[str(i) + "-" + o["name"] for i, (o, _) in enumerate(OPTIMIZERS)])
def test_optimizer_lockstep_with_state(opt, buffers, dtype):
    desc = with_optimizer(make_desc([4, 6, 5, 3], ["tanh", "sigmoid", "identity"], batch_size=5, n=12,
                                    dtype=dtype), opt, steps=30)
    # float32 re-synced: free-running float32 drifts (centered RMSprop's √(v − ḡ²) amplifies it)
    result = lockstep(desc, mode="resync" if dtype == "float32" else "free")
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 30
    m = manual.trainer.build(desc)
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    m.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(dtype)
    reported = m.train_step(x, np.zeros((5, 3), dtype))["optimizer_state"]
    expected = {f"{p}.{b}" for p in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                                      "layers.2.weight", "layers.2.bias") for b in buffers}
    assert set(reported) == expected
    if buffers:
        rtol, atol = tolerance(dtype)
        assert result.stats["optim"]["max_abs_err"] <= atol + rtol * 100
    else:
        assert "optim" not in result.stats


# (optimizer section, the field our error must name, or None where torch accepts it)
VALIDITY = [
    ({"name": "sgd", "lr": -0.1}, "optimizer.lr"),
    ({"name": "sgd", "lr": 0.0}, None),
    ({"name": "sgd", "momentum": -0.5}, "optimizer.momentum"),
    ({"name": "sgd", "weight_decay": -1e-3}, "optimizer.weight_decay"),
    ({"name": "sgd", "dampening": -0.5}, None),                       # torch does not check dampening
    ({"name": "sgd", "nesterov": True}, "optimizer.nesterov"),         # without momentum
    ({"name": "sgd", "nesterov": True, "momentum": 0.9, "dampening": 0.1}, "optimizer.nesterov"),
    ({"name": "sgd", "nesterov": True, "momentum": 0.9}, None),
    ({"name": "adam", "betas": [1.0, 0.999]}, "optimizer.betas[0]"),
    ({"name": "adam", "betas": [0.9, -0.01]}, "optimizer.betas[1]"),
    ({"name": "adam", "betas": [0.0, 0.0]}, None),
    ({"name": "adam", "eps": -1e-8}, "optimizer.eps"),
    ({"name": "adam", "eps": 0.0}, None),
    ({"name": "adam", "weight_decay": -0.1}, "optimizer.weight_decay"),
    ({"name": "adamw", "betas": [0.9, 1.0]}, "optimizer.betas[1]"),
    ({"name": "adamw", "lr": -1e-3}, "optimizer.lr"),
    ({"name": "rmsprop", "alpha": -0.1}, "optimizer.alpha"),
    ({"name": "rmsprop", "alpha": 1.5}, None),                         # torch only checks alpha >= 0
    ({"name": "rmsprop", "momentum": -0.1}, "optimizer.momentum"),
    ({"name": "rmsprop", "eps": -1.0}, "optimizer.eps"),
    ({"name": "adagrad", "lr_decay": -0.1}, "optimizer.lr_decay"),
    ({"name": "adagrad", "initial_accumulator_value": -0.1}, "optimizer.initial_accumulator_value"),
    ({"name": "adagrad", "eps": -1e-10}, "optimizer.eps"),
    ({"name": "adagrad", "weight_decay": 0.5, "lr_decay": 0.5}, None),
    ({"name": "adadelta", "rho": 1.5}, "optimizer.rho"),
    ({"name": "adadelta", "rho": -0.1}, "optimizer.rho"),
    ({"name": "adadelta", "rho": 1.0, "lr": 0.0}, None),
    ({"name": "nadam", "momentum_decay": -0.1}, "optimizer.momentum_decay"),
    ({"name": "nadam", "betas": [0.9, 1.0]}, "optimizer.betas[1]"),
    ({"name": "radam", "eps": -1.0}, "optimizer.eps"),
    ({"name": "radam", "weight_decay": -1.0}, "optimizer.weight_decay"),
]


@pytest.mark.parametrize("opt,field", VALIDITY, ids=[f"{o}" for o, _ in VALIDITY])
def test_refused_exactly_where_torch_refuses(opt, field):
    args = {k: (tuple(v) if k == "betas" else v) for k, v in opt.items() if k not in ("name", "eps_inside_sqrt")}
    try:
        TORCH[opt["name"]]([torch.zeros(2, requires_grad=True)], **args)
        torch_refuses = False
    except ValueError:
        torch_refuses = True
    assert torch_refuses == (field is not None)
    raw = _raw(make_desc([2, 1], "tanh"))
    if field is None:
        assert spec.parse({**raw, "optimizer": opt})["optimizer"]["name"] == opt["name"]
    else:
        with pytest.raises(spec.SpecError) as e:
            spec.parse({**raw, "optimizer": opt})
        assert e.value.field == field


@pytest.mark.parametrize("opt,field", [
    ({"name": "adam", "momentum": 0.9}, "optimizer.momentum"),         # not an argument of adam
    ({"name": "adam", "betas": 0.9}, "optimizer.betas"),
    ({"name": "adam", "amsgrad": "yes"}, "optimizer.amsgrad"),
    ({"name": "sgd", "nesterov": 1}, "optimizer.nesterov"),
    ({"name": "rmsprop", "alpha": float("nan")}, "optimizer.alpha"),
    ({"name": "lbfgs"}, "optimizer.name"),
    ({"name": "rmsprop", "eps_inside_sqrt": 1}, "optimizer.eps_inside_sqrt"),
    ({"name": "adam", "eps_inside_sqrt": True}, "optimizer.eps_inside_sqrt"),  # rmsprop and adagrad only
])
def test_malformed_optimizer_fields(opt, field):
    with pytest.raises(spec.SpecError) as e:
        spec.parse({**_raw(make_desc([2, 1], "tanh")), "optimizer": opt})
    assert e.value.field == field


@pytest.mark.parametrize("opt", [o for o, buffers in OPTIMIZERS if buffers], ids=lambda o: o["name"])
def test_load_optimizer_state_restarts_from_the_twins(opt):
    """What resync relies on: after loading the twin's parameters and optimizer state, one manual step
    equals the twin's next step (with a fresh state, Adam's bias correction or the buffers would differ)."""
    desc = with_optimizer(make_desc([3, 5, 2], "tanh", batch_size=4, n=8), opt)
    state = manual.init.initial_state(desc)
    twin = Twin(desc, state)
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((4, 3)), rng.uniform(size=(4, 2))) for _ in range(4)]
    for x, y in batches[:3]:
        r = twin.train_step(x, y)
    m = manual.trainer.build(desc)
    m.load_state_dict(r["state_dict"])
    m.load_optimizer_state(r["optimizer_state"])
    loaded = m.optimizer_state()
    assert set(loaded) == set(r["optimizer_state"])
    for k, v in r["optimizer_state"].items():
        assert np.array_equal(loaded[k], v), k
    got, want = m.train_step(*batches[3]), twin.train_step(*batches[3])
    for part in ("optimizer_state", "state_dict"):
        for k, v in want[part].items():
            assert compare(got[part][k], v, *tolerance("float64")).ok, (part, k)


# --- broken update rules: registry entries (torch_ref/zoo/planted.py), run by tests/test_mistakes.py ---

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_planted_adams_share_a_correct_body(dtype):
    """The planted wrong Adams (torch_ref/zoo/planted.py) differ from torch only in their planted line:
    with torch's update in that line, the shared body passes the lockstep."""
    desc = planted.AdamWithoutBiasCorrection1.described(dtype)
    correct_adam = faulty.build(desc, {(manual.optim.Adam, "step"): broken_adam("correct", planted.corrected)})
    result = lockstep(desc, impl=correct_adam)
    assert result.ok, str(result.first_mismatch)
    assert "optim" in result.stats  # exp_avg and exp_avg_sq were compared too


# (shape, dtype, alpha, layout): small arrays and odd ones take `x += alpha * y`; large contiguous
# ones go block by block, including a last partial block (BLOCK = 65536 elements)
ADD_SCALED_CASES = [((3, 4), "float64", -0.5, "contiguous"),
                    ((300, 400), "float32", -0.01, "contiguous"),
                    ((257, 1031), "float64", 0.37, "contiguous"),
                    ((2, 65536), "float32", -1e-3, "contiguous"),
                    ((400, 300), "float64", -0.1, "transposed"),
                    ((300, 400), "float32", -0.1, "mixed-dtype")]


@pytest.mark.parametrize("shape,dtype,alpha,layout", ADD_SCALED_CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-{c[1]}-{c[3]}" for c in ADD_SCALED_CASES])
def test_add_scaled_is_the_plain_formula_bit_for_bit_and_torchs_add(shape, dtype, alpha, layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape[::-1] if layout == "transposed" else shape).astype(dtype)
    if layout == "transposed":
        y = y.T
    if layout == "mixed-dtype":
        y = y.astype(np.float64)
    expected = x + alpha * y  # numpy's own two steps
    y_torch = torch.from_numpy(np.ascontiguousarray(y)).to(torch.float32 if dtype == "float32" else torch.float64)
    reference = torch.from_numpy(x.copy()).add_(y_torch, alpha=alpha)
    manual.optim.add_scaled_(x, alpha, y)
    assert x.dtype == np.dtype(dtype)
    assert np.array_equal(x, expected.astype(dtype))
    c = compare(x, reference.numpy(), *tolerance(dtype))
    assert c.ok, c
