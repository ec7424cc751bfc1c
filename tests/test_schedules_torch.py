"""Schedules by torch's class names: every one's rates against torch.optim.lr_scheduler's over 50
steps (and OneCycleLR's momentum), lockstep with them, interval = "epoch", LambdaLR's expression
parser (what it evaluates, what it refuses, and where), and the fields a bad section names."""
import math

import numpy as np
import pytest
import torch

import manual.optim
import manual.trainer
from manual.expression import Expression, ExpressionError
from manual.schedules import make_scheduler as manual_scheduler
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.optim import make_scheduler

SCHEDULES = [
    {"name": "StepLR", "step_size": 4, "gamma": 0.5},
    {"name": "MultiStepLR", "milestones": [3, 10, 11, 30], "gamma": 0.3},
    {"name": "ExponentialLR", "gamma": 0.93},
    {"name": "CosineAnnealingLR", "T_max": 13, "eta_min": 0.01},
    {"name": "CosineAnnealingWarmRestarts", "T_0": 5},
    {"name": "CosineAnnealingWarmRestarts", "T_0": 3, "T_mult": 2, "eta_min": 0.02},
    {"name": "LinearLR", "start_factor": 1.0, "end_factor": 0.1, "total_iters": 20},
    {"name": "PolynomialLR", "total_iters": 30, "power": 2.0},
    {"name": "PolynomialLR"},
    {"name": "ConstantLR", "factor": 0.5, "total_iters": 7},
    {"name": "LambdaLR", "lr_lambda": "1 / (1 + 0.1 * step)"},
    {"name": "LambdaLR", "lr_lambda": "max(0.05, 1 - step / 40) * exp(-0.01 * step) + floor(step / 7) ^ 2 / 100"},
    {"name": "OneCycleLR", "max_lr": 0.8, "total_steps": 50},
    {"name": "OneCycleLR", "max_lr": 0.8, "total_steps": 60, "anneal_strategy": "linear", "three_phase": True,
     "pct_start": 0.25, "div_factor": 10.0},
    {"name": "SequentialLR", "milestones": [5, 20],
     "schedulers": [{"name": "LinearLR", "start_factor": 0.1, "total_iters": 5},
                    {"name": "ConstantLR", "factor": 0.5, "total_iters": 3},
                    {"name": "CosineAnnealingLR", "T_max": 30}]},
    {"name": "SequentialLR", "milestones": [8],
     "schedulers": [{"name": "LambdaLR", "lr_lambda": "0.5 ^ step"}, {"name": "ExponentialLR", "gamma": 0.9}]},
]


def raw(sched, optimizer=None, steps=50, **data):
    return {"network": {"sizes": [3, 5, 2], "activation": ["tanh", "identity"], "loss": "mse"},
            "init": {"seed": 0}, "optimizer": optimizer or {"name": "sgd", "lr": 0.5, "momentum": 0.5},
            "data": {"random": {"n": 10, "seed": 1}, "batch_size": 4, **data}, "scheduler": sched,
            "run": {"steps": steps}}


def momentum(opt):
    return opt.betas[0] if hasattr(opt, "betas") else opt.momentum


@pytest.mark.parametrize("optimizer", [None, {"name": "adam", "lr": 0.5}])
@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s["name"])
def test_rates_equal_torchs_over_fifty_steps(sched, optimizer):
    """Both sides' lr (and OneCycleLR's momentum or β₁) at every one of 50 steps are torch's."""
    desc = spec.parse(raw(sched, optimizer))
    opt = dict(desc["optimizer"])
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5, momentum=0.5) if optimizer is None \
        else torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.5)
    m_opt = manual.optim.optimizer_class(opt)([], **{k: v for k, v in opt.items() if k != "name"})
    t_sched, m_sched = make_scheduler(t_opt, desc["scheduler"], desc), manual_scheduler(m_opt, desc["scheduler"], desc)
    for t in range(50):
        group = t_opt.param_groups[0]
        assert m_opt.lr == pytest.approx(group["lr"], rel=1e-12, abs=1e-15), t
        theirs = group["betas"][0] if "betas" in group else group["momentum"]
        assert momentum(m_opt) == pytest.approx(theirs, rel=1e-12), t
        t_opt.step()
        t_sched.step()
        m_sched.step()


# (schedule, the rate at t for lr₀ = 0.5 written out here: real code's schedules)
REAL_CODE = [
    ({"name": "StepLR", "step_size": 2, "gamma": 0.5, "interval": "epoch"},  # per-epoch step decay, 3 batches/epoch
     lambda t: 0.5 * 0.5 ** ((t // 3) // 2)),
    ({"name": "LambdaLR", "lr_lambda": "1 / (1 + 0.05 * step)"}, lambda t: 0.5 / (1 + 0.05 * t)),
    ({"name": "LambdaLR", "lr_lambda": "max(0.1, 1 - step / 20)"}, lambda t: 0.5 * max(0.1, 1 - t / 20)),
    ({"name": "LinearLR", "start_factor": 1.0, "end_factor": 0.1, "total_iters": 20},
     lambda t: 0.5 * (1 - 0.9 * min(t, 20) / 20)),
]


@pytest.mark.parametrize("sched,rate", REAL_CODE, ids=lambda v: v["name"] if isinstance(v, dict) else "")
def test_real_codes_schedules_are_expressible(sched, rate):
    """The manual trainer's rate at every iteration is the formula real code writes (10 samples,
    batch 4: 3 iterations per epoch)."""
    desc = spec.parse(raw(sched))
    trainer = manual.trainer.Trainer(desc)
    for t in range(40):
        assert trainer.optimizer.lr == pytest.approx(rate(t), rel=1e-12), t
        trainer.scheduler.step()


@pytest.mark.parametrize("drop_last,per_epoch", [(False, 3), (True, 2)])
def test_an_epoch_is_a_pass_over_the_training_set(drop_last, per_epoch):
    desc = spec.parse(raw({"name": "ExponentialLR", "gamma": 0.5, "interval": "epoch"}, drop_last=drop_last))
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    t_sched, trainer = make_scheduler(t_opt, desc["scheduler"], desc), manual.trainer.Trainer(desc)
    for t in range(12):
        assert trainer.optimizer.lr == t_opt.param_groups[0]["lr"] == 0.5 * 0.5 ** (t // per_epoch), t
        t_opt.step()
        t_sched.step()
        trainer.scheduler.step()
    state = t_sched.state_dict()
    assert state["iterations_seen"] == 12
    t_sched.load_state_dict({**state, "iterations_seen": 3})
    assert t_sched.count == 3


@pytest.mark.parametrize("sched", [SCHEDULES[1], SCHEDULES[5], SCHEDULES[11], SCHEDULES[12], SCHEDULES[14],
                                   {"name": "StepLR", "step_size": 1, "gamma": 0.7, "interval": "epoch"}],
                         ids=lambda s: s["name"])
@pytest.mark.parametrize("mode", ["free", "resync"])
def test_lockstep_with_torchs_schedules(sched, mode):
    desc = spec.parse(raw(sched, steps=40))
    result = lockstep(desc, mode=mode)
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 40


# expression -> the value at step 3, written as Python
EXPRESSIONS = [
    ("step", 3.0), ("-step", -3.0), ("2 ^ 3 ^ 2", 512.0), ("2 ** -1", 0.5), ("-2 ^ 2", -4.0), ("(1 + step) * 2", 8.0),
    ("1 / (1 + 0.5 * step)", 0.4), ("min(1, step, 2)", 1.0), ("max(.5, 1e-1)", 0.5), ("sqrt(step + 6)", 3.0),
    ("floor(step / 2) + ceil(step / 2)", 3.0), ("exp(log(step))", 3.0), ("cos(pi * step)", -1.0), ("sin(0)", 0.0),
    ("10 - 2 - 3", 5.0), ("12 / 2 / 3", 2.0), ("+step - -1", 4.0),
]


@pytest.mark.parametrize("text,value", EXPRESSIONS)
def test_the_expression_evaluates_as_written(text, value):
    assert Expression(text)(3) == pytest.approx(value, rel=1e-15, abs=1e-15)


# (expression, where the fault is: the 1-based position the error names)
BAD_EXPRESSIONS = [
    ("1 +", 4), ("(step", 6), ("step)", 5), ("2 * * 3", 5), ("__import__('os')", 1), ("step.real", 5),
    ("exp(1, 2)", 1), ("max(1)", 1), ("x + 1", 1), ("1 $ 2", 3), ("1 + 'a'", 5), ("", 1), ("lambda: 1", 1), ("open('f')", 1),
    ("step step", 6), ("3 ,", 3),
]


@pytest.mark.parametrize("text,position", BAD_EXPRESSIONS)
def test_a_bad_expression_is_refused_naming_field_and_position(text, position):
    with pytest.raises(ExpressionError) as e:
        Expression(text)
    assert e.value.position == position
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw({"name": "LambdaLR", "lr_lambda": text}))
    assert e.value.field == "scheduler.lr_lambda" and f"at position {position}" in str(e.value)


@pytest.mark.parametrize("text,step", [("1 / (10 - step)", 10), ("log(20 - step)", 20), ("1 - step / 5", 6),
                                       ("(-1) ^ 0.5 + step", 0), ("exp(1000 * step)", 1)])
def test_an_expression_without_a_rate_at_some_step_is_refused(text, step):
    """Division by zero, a domain error, a negative factor, a complex or infinite value within run.steps."""
    with pytest.raises(spec.SpecError) as e:
        spec.check_fits(spec.parse(raw({"name": "LambdaLR", "lr_lambda": text}, steps=30)))
    assert e.value.field == "scheduler.lr_lambda" and f"at step {step}" in str(e.value)


# (schedule section, optimizer, the field the error names)
BAD = [
    ({"name": "MultiStepLR", "milestones": [3, 3]}, None, "scheduler.milestones[1]"),
    ({"name": "MultiStepLR", "milestones": 3}, None, "scheduler.milestones"),
    ({"name": "MultiStepLR", "milestones": [0]}, None, "scheduler.milestones[0]"),
    ({"name": "CosineAnnealingWarmRestarts", "T_0": 0}, None, "scheduler.T_0"),
    ({"name": "LinearLR", "end_factor": 1.5}, None, "scheduler.end_factor"),
    ({"name": "ConstantLR", "factor": 0}, None, "scheduler.factor"),
    ({"name": "PolynomialLR", "total_iters": 0}, None, "scheduler.total_iters"),
    ({"name": "LambdaLR"}, None, "scheduler.lr_lambda"),
    ({"name": "LambdaLR", "lr_lambda": 0.5}, None, "scheduler.lr_lambda"),
    ({"name": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "anneal_strategy": "cosine"}, None,
     "scheduler.anneal_strategy"),
    ({"name": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "pct_start": 0.1}, None, "scheduler.pct_start"),
    ({"name": "OneCycleLR", "max_lr": 1.0, "total_steps": 49}, None, "scheduler.total_steps"),
    ({"name": "OneCycleLR", "max_lr": 1.0, "total_steps": 50}, {"name": "adagrad"}, "scheduler.cycle_momentum"),
    ({"name": "SequentialLR", "milestones": [5], "schedulers": [{"name": "ConstantLR"}]}, None, "scheduler.milestones"),
    ({"name": "SequentialLR", "milestones": [5], "schedulers": [{"name": "ConstantLR"}, {"name": "StepLR"}]}, None,
     "scheduler.schedulers[1].step_size"),
    ({"name": "SequentialLR", "milestones": [5], "schedulers": [{"name": "ConstantLR"},
                                                                {"name": "ConstantLR", "interval": "epoch"}]},
     None, "scheduler.schedulers[1].interval"),
    ({"name": "SequentialLR", "milestones": [5], "schedulers": [{"name": "ConstantLR"},
                                                                {"name": "OneCycleLR", "max_lr": 1, "total_steps": 9}]},
     None, "scheduler.schedulers[1].name"),
    ({"name": "StepLR", "step_size": 2, "interval": "iteration"}, None, "scheduler.interval"),
]


@pytest.mark.parametrize("sched,optimizer,field", BAD, ids=[f for _, _, f in BAD])
def test_a_bad_schedule_names_the_field(sched, optimizer, field):
    with pytest.raises(spec.SpecError) as e:
        spec.check_fits(spec.parse(raw(sched, optimizer)))
    assert e.value.field == field


def test_the_expression_evaluates_nothing_but_arithmetic(monkeypatch):
    """No eval() anywhere on the path: a parsed tree holds only numbers, step and the listed functions."""
    import builtins
    monkeypatch.setattr(builtins, "eval", lambda *a: pytest.fail("eval called"))
    f = Expression("max(0.1, 1 - step / 20) * exp(-step)")
    assert f(2) == pytest.approx(0.9 * math.exp(-2))
    flat = repr(f.tree)
    assert "step" not in flat.replace("'var'", "") and np.isfinite(f(100))
