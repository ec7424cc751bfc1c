"""The one-line diagnosis under a mismatch (torch_ref/lockstep/diagnosis.py) and the zoo's attribution
(torch_ref/zoo/attribution.py): each relation on synthetic arrays, none where none holds, the line
under each zoo or planted mistake that a factor, a transpose or an off-by-one explains, and no
diagnosis at all on a passing run."""
import numpy as np
import pytest

import torch_ref.lockstep.run as run_module
from torch_ref import api
from torch_ref.cli.main import main
from torch_ref.lockstep import diagnosis as D
from torch_ref.lockstep.run import lockstep
from torch_ref.zoo.mistakes import mistake

RNG = np.random.default_rng(0)
R = RNG.normal(size=(3, 3))
PREV = RNG.normal(size=(3, 3))
NEXT = RNG.normal(size=(3, 3))
OTHER = RNG.normal(size=(3, 3))


def ctx(**kw):
    """A float64 context around the reference R, with N = 4, C = 3, lr = 0.1."""
    base = dict(reference=R, rtol=1e-12, atol=1e-14, iteration=5, previous=PREV, next=NEXT,
                others={"grad 'layers.0.weight'": OTHER}, factor=16.0,
                constants={"2": 2.0, "−1": -1.0, "the batch size N = 4": 4.0, "1/N = 1/4": 0.25,
                           "the learning rate lr = 0.1": 0.1})
    return D.Context(**{**base, **kw})


def flip_rows(a, rows):
    out = a.copy()
    out[rows] *= -1
    return out


def zero_rows(a, rows):
    out = a.copy()
    out[rows] = 0.0
    return out


# (the implementation's tensor, the context's changes, words the line must have; None: no line)
CASES = [
    ("batch size", 4 * R, {}, ["4", "batch size N = 4", "× the reference"]),
    ("1/N", R / 4, {}, ["0.25", "1/N"]),
    ("minus one", -R, {}, ["-1 × the reference"]),
    ("learning rate", 0.1 * R, {}, ["lr = 0.1"]),
    ("an unnamed constant", 3.7 * R, {}, ["3.7 × the reference"]),
    ("transpose", R.T, {}, ["transpose"]),
    ("previous iteration", PREV, {}, ["previous iteration (4)"]),
    ("next iteration", NEXT, {}, ["next iteration (6)"]),
    ("accumulated", R + PREV, {}, ["plus the previous iteration's"]),
    ("another tensor", OTHER, {}, ["grad 'layers.0.weight'"]),
    ("all zero", np.zeros_like(R), {}, ["zero where the reference is not (every element)"]),
    ("zero rows", zero_rows(R, [0, 2]), {}, ["zero", "rows [0, 2]"]),
    ("sign flipped on a row", flip_rows(R, [1]), {}, ["sign flipped", "rows [1]"]),
    ("step × lr", PREV + 0.1 * (R - PREV), {"is_step": True, "step_constants": {"lr": 0.1}}, ["a step 0.1 (lr)"]),
    ("step unnamed", PREV + 7.0 * (R - PREV), {"is_step": True}, ["a step 7 ×"]),
    ("not updated", PREV, {"is_step": True}, ["not updated"]),
    ("noise", R + RNG.normal(size=R.shape), {}, None),
    ("rounding only", R * (1 + 1e-13), {}, None),
    ("elementwise scale", R * np.arange(1, 10).reshape(3, 3), {}, None),
    ("a shape that differs", np.ones((3, 2)), {}, None),
]


@pytest.mark.parametrize("m, changes, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_relation_is_named_and_none_gives_no_line(m, changes, words):
    line = D.diagnose(m, ctx(**changes))
    if words is None:
        assert line == ""
    else:
        assert line.startswith("the implementation's tensor is ")
        for w in words:
            assert w in line, line


def run_mistake(mistake_id, attribution=False):
    """The first mismatch of a registered mistake on its own description (float64, free)."""
    m = mistake(mistake_id)
    desc = m.described("float64")
    first = lockstep(desc, impl=m(desc), attribution=attribution).first_mismatch
    assert (first.iteration, first.stage, first.name) == (m.iteration, m.stage, m.tensor)
    return first


# each zoo (and planted) mistake that a factor, a transpose or an off-by-one explains: the words its
# diagnosis must have
EXPLAINED = [
    ("loss-grad-sign", ["-1 × the reference"]),
    ("sigmoid-derivative-sign-flipped", ["-1 × the reference"]),
    ("bce-grad-sign-flipped", ["-1 × the reference"]),
    ("mean-loss-grad-not-divided-by-batch", ["4 (the batch size N = 4) × the reference"]),
    ("mse-grad-not-divided-by-n", ["6 (N·C = 6) × the reference"]),
    ("bias-grad-averaged-over-batch", ["0.25 (1/N = 1/4) × the reference"]),
    ("loss-missing-half", ["2 ", "× the reference"]),
    ("half-sse-loss-without-half", ["2 ", "× the reference"]),
    ("smooth-l1-grad-not-divided-by-beta", ["0.5 ", "× the reference"]),
    ("weight-grad-transposed", ["transpose"]),
    ("weight-grad-transposed-square", ["transpose"]),
    ("weight-grad-transposed-shared-bias", ["transpose"]),
    ("grads-not-zeroed", ["plus the previous iteration's", "zero_grad"]),
    ("momentum-buffer-restarted", ["the reference's grad 'layers.0.weight' at this iteration"]),
    ("lr-applied-twice", ["a step 0.5 (the learning rate lr = 0.5: lr applied twice?)"]),
    ("sgd-adds-gradient", ["a step -1 (−1: a step uphill)"]),
    ("step-lr-one-step-late", ["a step 10 (lr at iteration 2 / lr at 3: the schedule one iteration late)"]),
    ("frozen-bias-updated", ["frozen parameter updated"]),
    ("leaky-relu-grad-with-zero-slope", ["zero where the reference is not", "equal to the reference elsewhere"]),
    ("adagrad-decay-off-by-one", ["a step 0.909091 ×"]),
]


@pytest.mark.parametrize("mistake_id, words", EXPLAINED, ids=[e[0] for e in EXPLAINED])
def test_the_diagnosis_names_the_relation_of_each_explained_mistake(mistake_id, words):
    first = run_mistake(mistake_id)
    for w in words:
        assert w in first.diagnosis, first.diagnosis
    assert f"diagnosis: {first.diagnosis}" in str(first)
    assert first.to_json()["diagnosis"] == first.diagnosis


@pytest.mark.parametrize("mistake_id", ["hidden-error-one-output", "activation-derivative-dropped"])
def test_a_mistake_no_relation_explains_gets_no_line(mistake_id):
    first = run_mistake(mistake_id)
    assert first.diagnosis == ""
    assert "diagnosis:" not in str(first)


# (the mistake run as the implementation, the zoo's mistake that must be named first)
ATTRIBUTED = [
    ("lr-applied-twice", "lr-applied-twice"),
    ("grads-not-zeroed", "grads-not-zeroed"),
    ("sigmoid-derivative-sign-flipped", "loss-grad-sign"),  # a planted bug the zoo's gives exactly
    ("weight-grad-transposed-square", "weight-grad-transposed"),
]


@pytest.mark.parametrize("mistake_id, named", ATTRIBUTED, ids=[a[0] for a in ATTRIBUTED])
def test_the_zoo_mistake_that_reproduces_the_mismatch_is_named(mistake_id, named):
    first = run_mistake(mistake_id, attribution=True)
    assert first.reproduced_by[0] == named
    assert f"this is what the zoo's `{named}` gives" in str(first)


def test_a_mismatch_no_zoo_mistake_gives_names_none():
    first = run_mistake("mse-grad-not-divided-by-n", attribution=True)
    assert first.reproduced_by == [] and "zoo's" not in str(first)


def test_attribution_is_off_with_no_attribution(capsys, monkeypatch):
    called = []
    monkeypatch.setattr("torch_ref.zoo.attribution.attribute", lambda *a, **k: called.append(a) or ["x"])
    code = main(["run", "worked_example", "--steps", "2", "--quiet", "--no-attribution",
                 "--impl", "torch_ref.zoo.mistakes:LrAppliedTwice"])
    assert code == 1 and called == []
    assert "diagnosis: the implementation's tensor is a step 0.5" in capsys.readouterr().out
    result = api.check("worked_example", "torch_ref.zoo.mistakes:LrAppliedTwice", steps=2)
    assert called and result.first_mismatch.reproduced_by == ["x"]


def test_a_passing_run_never_diagnoses(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("diagnosed a passing run")
    monkeypatch.setattr(run_module, "explain", fail)
    monkeypatch.setattr("torch_ref.zoo.attribution.attribute", fail)
    assert api.check("worked_example", steps=3).ok


def schedule_description(milestones, interval):
    """A small MLP, 8 samples in batches of 4 (2 iterations an epoch), MultiStepLR γ 0.1 at `milestones`."""
    scheduler = {"name": "MultiStepLR", "milestones": milestones, "gamma": 0.1}
    if interval:
        scheduler["interval"] = interval
    return {"network": {"sizes": [3, 4, 2], "activation": ["tanh", "identity"], "loss": "mse"},
            "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.5}, "scheduler": scheduler,
            "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4}, "run": {"steps": 6, "dtype": "float64"}}


# (the reference's milestones, the implementation's, interval, where it fails, the words of its line)
SCHEDULE_LAGS = [
    ([1], [2], "epoch", 2, "a step 10 (lr at epoch 0 / lr at 1: the per-epoch schedule one epoch late)"),
    ([2], [1], "epoch", 2, "a step 0.1 (lr at epoch 2 / lr at 1: the per-epoch schedule one epoch early)"),
    ([3], [4], None, 3, "a step 10 (lr at iteration 2 / lr at 3: the schedule one iteration late)"),
]


@pytest.mark.parametrize("ref,impl,interval,iteration,words", SCHEDULE_LAGS, ids=["epoch-late", "epoch-early", "iteration-late"])
def test_a_schedule_a_step_off_is_named_in_its_own_unit(ref, impl, interval, iteration, words):
    """The schedule's relation follows interval = "epoch": a per-epoch schedule one epoch off is named
    with the rates of the epochs (replayed per iteration, it would name none)."""
    import manual.trainer
    other = api._described(schedule_description(impl, interval))
    result = api.check(schedule_description(ref, interval), lambda desc: manual.trainer.build(other), attribution=False)
    first = result.first_mismatch
    assert (first.iteration, first.stage) == (iteration, "param"), result.summary()
    assert words in first.diagnosis, first.diagnosis
