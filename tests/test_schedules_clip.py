"""Learning-rate schedules and gradient clipping: the manual schedule's rates against
torch.optim.lr_scheduler's, lockstep with both, clipping that really clips (broken ones: torch_ref/zoo/planted.py, run by tests/test_mistakes.py)."""
import math

import numpy as np
import pytest
import torch

import manual.lr_scheduler
import manual.optim
import manual.trainer
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.model import make_scheduler

SCHEDULES = [
    {"name": "step", "step_size": 7, "gamma": 0.5},
    {"name": "step", "step_size": 1},
    {"name": "exponential", "gamma": 0.97},
    {"name": "cosine", "T_max": 13},
    {"name": "cosine", "T_max": 10, "eta_min": 0.02},
    {"name": "warmup", "warmup_steps": 10, "start_factor": 0.1},
    {"name": "warmup"},
]


def closed_form(s, lr0, t):
    """The documented rate at iteration t, written out independently of both implementations."""
    if s["name"] == "step":
        return lr0 * s.get("gamma", 0.1) ** (t // s["step_size"])
    if s["name"] == "exponential":
        return lr0 * s["gamma"] ** t
    if s["name"] == "cosine":
        lo = s.get("eta_min", 0.0)
        return lo + (lr0 - lo) * (1 + math.cos(math.pi * t / s["T_max"])) / 2
    w, f = s.get("warmup_steps", 5), s.get("start_factor", 1 / 3)
    return lr0 * (f + (1 - f) * min(t, w) / w)


def raw(**extra):
    return {"network": {"sizes": [3, 6, 2], "activation": ["tanh", "identity"], "loss": "mse"},
            "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.5},
            "data": {"random": {"n": 10, "seed": 1}, "batch_size": 4}, **extra}


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: "-".join(map(str, s.values())))
def test_manual_rates_equal_torchs_over_three_periods(sched):
    parsed = spec.parse(raw(scheduler=sched))["scheduler"]
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    t_sched = make_scheduler(t_opt, parsed)
    m_opt = manual.optim.SGD([], lr=0.5)
    args = {k: v for k, v in parsed.items() if k != "name"}
    m_sched = manual.lr_scheduler.SCHEDULERS[parsed["name"]](m_opt, **args)
    for t in range(40):
        theirs = t_opt.param_groups[0]["lr"]
        assert m_opt.lr == pytest.approx(theirs, rel=1e-13, abs=1e-15), t
        assert m_opt.lr == pytest.approx(closed_form(sched, 0.5, t), rel=1e-13, abs=1e-15), t
        t_opt.step()
        t_sched.step()
        m_sched.step()


CLIPS = [{"max_norm": 0.05}, {"max_norm": 0.05, "norm_type": "inf"}, {"max_norm": 0.02, "norm_type": 1},
         {"max_norm": 0.03, "norm_type": 3.0}, {"clip_value": 0.01}, {"max_norm": 1e6}]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("extra", [{"scheduler": s} for s in SCHEDULES[::2]] + [{"clip": c} for c in CLIPS],
                         ids=lambda e: "-".join(f"{k}={v}" for d in e.values() for k, v in d.items()))
def test_lockstep_with_schedule_or_clipping(extra, dtype):
    desc = spec.parse(raw(**extra, run={"steps": 40, "dtype": dtype}))
    result = lockstep(desc, mode="resync" if dtype == "float32" else "free")
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == 40


def norm_of(grads, p):
    flat = np.concatenate([g.ravel() for g in grads.values()])
    return np.abs(flat).max() if p == math.inf else (np.abs(flat) ** p).sum() ** (1 / p)


@pytest.mark.parametrize("clip", CLIPS[:-1], ids=str)
def test_clipping_really_clips(clip):
    """The clipped gradients the grad stage compares obey the bound (computed here, independently)."""
    desc = spec.parse(raw(clip=clip))
    plain = manual.trainer.build(spec.parse(raw()))
    clipped = manual.trainer.build(desc)
    state = __import__("manual.init").init.initial_state(desc)
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = 5 + np.zeros((4, 2))  # far from the outputs: large gradients
    for t in (plain, clipped):
        t.load_state_dict(state)
    g0, g1 = plain.train_step(x, y)["grads"], clipped.train_step(x, y)["grads"]
    if "clip_value" in clip:
        assert max(np.abs(g).max() for g in g0.values()) > clip["clip_value"]
        for k in g0:
            np.testing.assert_array_equal(g1[k], np.clip(g0[k], -clip["clip_value"], clip["clip_value"]))
    else:
        p = desc["clip"]["norm_type"]
        n0 = norm_of(g0, p)
        assert n0 > clip["max_norm"]
        assert norm_of(g1, p) == pytest.approx(clip["max_norm"] * n0 / (n0 + 1e-6), rel=1e-12)
        for k in g0:  # one common factor: the direction is kept
            np.testing.assert_allclose(g1[k], g0[k] * clip["max_norm"] / (n0 + 1e-6), rtol=1e-12, atol=1e-15)


# broken schedules and clipping: registry entries (torch_ref/zoo/planted.py), run by tests/test_mistakes.py


def test_toml_inf_is_the_infinity_norm(tmp_path):
    f = tmp_path / "clip.toml"
    f.write_text('[network]\nsizes = [2, 1]\nactivation = "tanh"\nloss = "mse"\n[init]\nseed = 0\n'
                 '[optimizer]\nname = "sgd"\n[data]\nrandom = { n = 3 }\n[clip]\nmax_norm = 1.0\nnorm_type = inf\n')
    assert spec.load(f)["clip"] == {"max_norm": 1.0, "norm_type": math.inf}


@pytest.mark.parametrize("section,value,field", [
    ("scheduler", {"name": "step"}, "scheduler.step_size"),
    ("scheduler", {"name": "step", "step_size": 0}, "scheduler.step_size"),
    ("scheduler", {"name": "exponential", "gamma": -0.5}, "scheduler.gamma"),
    ("scheduler", {"name": "cosine", "T_max": 2.5}, "scheduler.T_max"),
    ("scheduler", {"name": "warmup", "start_factor": 0.0}, "scheduler.start_factor"),
    ("scheduler", {"name": "warmup", "start_factor": 1.5}, "scheduler.start_factor"),
    ("scheduler", {"name": "onecycle"}, "scheduler.name"),
    ("scheduler", {"name": "step", "step_size": 2, "T_max": 3}, "scheduler.T_max"),
    ("clip", {}, "clip"),
    ("clip", {"max_norm": 1.0, "clip_value": 1.0}, "clip"),
    ("clip", {"max_norm": -1.0}, "clip.max_norm"),
    ("clip", {"max_norm": 1.0, "norm_type": 0}, "clip.norm_type"),
    ("clip", {"max_norm": 1.0, "norm_type": "fro"}, "clip.norm_type"),
    ("clip", {"clip_value": -0.1}, "clip.clip_value"),
    ("clip", {"clip_value": 0.1, "norm_type": 2}, "clip.norm_type"),
])
def test_bad_schedule_or_clip_names_the_field(section, value, field):
    with pytest.raises(spec.SpecError) as e:
        spec.parse(raw(**{section: value}))
    assert e.value.field == field
