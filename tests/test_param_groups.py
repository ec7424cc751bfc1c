"""[[optimizer.param_groups]]: torch.optim's parameter groups on both sides (in lockstep, float64
free-running and float32 re-synced), how the description normalises them (the last group of the
parameters no group names, every argument filled in), schedules scaling every group from its own
base rate, and the refusals, each naming the field."""
import json

import numpy as np
import pytest
import torch

from manual.trainer import Trainer
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import Twin

LAYERS = {"input_shape": [3], "loss": "mse", "layers": [
    {"type": "Linear", "out_features": 5}, {"type": "Tanh"}, {"type": "Linear", "out_features": 2}]}


def raw(optimizer, network=None, dtype="float64", scheduler=None, steps=12):
    d = {"network": network or {"sizes": [3, 5, 2], "activation": "tanh", "loss": "mse"},
         "init": {"seed": 0}, "optimizer": optimizer,
         "data": {"random": {"n": 10, "seed": 1}, "batch_size": 4}, "run": {"steps": steps, "dtype": dtype}}
    if scheduler:
        d["scheduler"] = scheduler
    return d


CASES = [  # (id, optimizer, network, scheduler)
    ("sgd-decay-on-weights", {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                              "param_groups": [{"params": "*.weight", "weight_decay": 0.1}]}, None, None),
    ("sgd-lr-per-layer", {"name": "sgd", "lr": 0.1, "param_groups": [{"params": "layers.0.*", "lr": 0.02},
                                                                     {"params": ["layers.1.bias"], "lr": 0.3}]},
     None, None),
    ("adam-betas-cosine", {"name": "adam", "lr": 0.02, "param_groups": [
        {"params": ["layers.1.weight", "layers.1.bias"], "betas": [0.8, 0.95], "lr": 0.005}]}, None,
     {"name": "cosine", "T_max": 8, "eta_min": 0.001}),
    ("rmsprop-step-schedule", {"name": "rmsprop", "lr": 0.01, "param_groups": [
        {"params": "*.bias", "lr": 0.001, "alpha": 0.9}]}, None, {"name": "step", "step_size": 3, "gamma": 0.5}),
    ("adamw-layers", {"name": "adamw", "lr": 0.01, "param_groups": [{"params": "*.bias", "weight_decay": 0.0}]},
     LAYERS, None),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case,optimizer,network,scheduler", CASES, ids=[c[0] for c in CASES])
def test_param_groups_in_lockstep(case, optimizer, network, scheduler, dtype):
    desc = spec.parse(raw(optimizer, network, dtype, scheduler))
    result = lockstep(desc, mode="free" if dtype == "float64" else "resync")
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 12


@pytest.mark.parametrize("case,optimizer,network,scheduler", CASES, ids=[c[0] for c in CASES])
def test_the_groups_change_the_run(case, optimizer, network, scheduler):
    """Negative control: the twin with the groups against the manual side without them parts at
    the first update (the groups are not ignored on either side)."""
    desc = spec.parse(raw(optimizer, network, "float64", scheduler))
    plain = spec.parse(raw({k: v for k, v in optimizer.items() if k != "param_groups"}, network, "float64", scheduler))
    result = lockstep(desc, impl=Trainer(plain))
    assert not result.ok
    assert result.first_mismatch.iteration == 0
    assert result.first_mismatch.stage in ("optim", "param")  # the optimizer's state or the parameters


def test_groups_are_normalised_as_torchs_param_groups():
    """Every group holds every argument (the optimizer's where it gives none) and its parameters
    by name, in the state dict's order; the rest form a last group with the optimizer's own."""
    desc = spec.parse(raw({"name": "sgd", "lr": 0.1, "weight_decay": 0.01,
                           "param_groups": [{"params": ["layers.1.bias", "*.0.weight"], "lr": 0.5}]}))
    groups = desc["optimizer"]["param_groups"]
    assert [g["params"] for g in groups] == [["layers.0.weight", "layers.1.bias"], ["layers.0.bias", "layers.1.weight"]]
    assert [(g["lr"], g["weight_decay"], g["momentum"]) for g in groups] == [(0.5, 0.01, 0.0), (0.1, 0.01, 0.0)]
    twin = Twin(desc, {n: np.zeros(s) for n, s in
                       {"layers.0.weight": (5, 3), "layers.0.bias": (5,), "layers.1.weight": (2, 5),
                        "layers.1.bias": (2,)}.items()})
    names = {id(p): n for n, p in twin.params.items()}
    assert [[names[id(p)] for p in g["params"]] for g in twin.optimizer.param_groups] == [g["params"] for g in groups]
    assert [g["lr"] for g in twin.optimizer.param_groups] == [0.5, 0.1]


def test_a_description_without_groups_is_unchanged():
    assert "param_groups" not in spec.parse(raw({"name": "sgd", "lr": 0.1}))["optimizer"]


def test_every_parameter_named_needs_no_last_group():
    desc = spec.parse(raw({"name": "sgd", "lr": 0.1, "param_groups": [{"params": "*.weight"}, {"params": "*.bias"}]}))
    assert len(desc["optimizer"]["param_groups"]) == 2


def test_schedules_scale_every_group_from_its_own_rate():
    """torch's schedules set each group's rate from its own base rate: the manual side's rates
    after 3 steps of a cosine schedule equal torch's group by group (and differ between groups)."""
    desc = spec.parse(raw({"name": "sgd", "lr": 0.1, "param_groups": [{"params": "*.bias", "lr": 0.4}]},
                          scheduler={"name": "cosine", "T_max": 5, "eta_min": 0.01}))
    trainer = Trainer(desc)
    opt = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": 0.4}, {"params": [torch.zeros(1)]}], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=0.01)
    for _ in range(3):
        trainer.scheduler.step()
        opt.step()
        sched.step()
    assert trainer.scheduler.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-15)
    assert len(set(sched.get_last_lr())) == 2


def test_optimizer_state_names_are_unchanged():
    desc = spec.parse(raw({"name": "adam", "lr": 0.01, "param_groups": [{"params": "*.bias", "lr": 0.1}]}))
    trainer = Trainer(desc)
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    state = trainer.train_step(x, y)["optimizer_state"]
    assert set(state) == {f"layers.{k}.{kind}.{b}" for k in (0, 1) for kind in ("weight", "bias")
                          for b in ("step", "exp_avg", "exp_avg_sq")}


BAD = [  # (id, param_groups, the field the message must start with)
    ("overlap", [{"params": "*.weight"}, {"params": "layers.0.*"}], "optimizer.param_groups[1].params"),
    ("no-match", [{"params": "*.gamma"}], "optimizer.param_groups[0].params"),
    ("no-match-in-list", [{"params": ["layers.0.weight", "layers.9.*"]}], "optimizer.param_groups[0].params[1]"),
    ("no-params", [{"lr": 0.1}], "optimizer.param_groups[0].params"),
    ("params-number", [{"params": 3}], "optimizer.param_groups[0].params"),
    ("negative-lr", [{"params": "*.bias"}, {"params": "*.weight", "lr": -1.0}], "optimizer.param_groups[1].lr"),
    ("unknown-arg", [{"params": "*.bias", "betas": [0.9, 0.9]}], "optimizer.param_groups[0].betas"),
    ("other-optimizer", [{"params": "*.bias", "name": "adam"}], "optimizer.param_groups[0].name"),
    ("not-a-list", {"params": "*.bias"}, "optimizer.param_groups"),
    ("empty", [], "optimizer.param_groups"),
    ("group-not-table", ["*.bias"], "optimizer.param_groups[0]"),
]


@pytest.mark.parametrize("case,groups,field", BAD, ids=[b[0] for b in BAD])
def test_bad_groups_exit_2_naming_the_field(case, groups, field, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(raw({"name": "sgd", "lr": 0.1, "param_groups": groups}, steps=2)))
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"backprop-check: error: {field}: "), err
