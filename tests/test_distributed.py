"""Data-parallel lockstep (torch_ref/distributed.py): DDP on gloo ranks against the manual
full-batch step, the DDP mistakes caught and diagnosed, faults stopped and cleaned up, the
torchrun multi-node form on loopback.

Launching processes is the slow part, so the cases are batched: one launch runs every 2-rank case
in one process group, another every 3-rank case; the faults, the CLI and torchrun add a few more.
"""
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import manual.init
import manual.trainer
from torch_ref import cli, spec, zoo_ddp
from torch_ref.distributed import (Case, RankFailure, Setup, batch_reduction, check, diagnose, free_port,
                                   shards)
from torch_ref.testing import tolerance

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "torch_ref" / "specs"
WORKED6 = SPECS / "worked_example_batch6.toml"
THREE = SPECS / "three_layer_minibatch.toml"
STEPS = 20


def load(path, steps=STEPS, loss=None, batch_size=None, optimizer=None, dtype=None, n=None):
    raw = tomllib.loads(path.read_text())
    if n is not None:
        raw["data"]["random"]["n"] = n
    raw["run"]["steps"] = steps
    if loss is not None:
        raw["network"]["loss"] = loss
    if batch_size is not None:
        raw["data"]["batch_size"] = batch_size
    if optimizer is not None:
        raw["optimizer"] = optimizer
    if dtype is not None:
        raw["run"]["dtype"] = dtype
    return spec.parse(raw)


MSE_SUM = {"name": "mse", "reduction": "sum"}
SUM_SGD = {"name": "sgd", "lr": 0.02}  # a summed loss grows with the batch: a smaller step

# (id, description, micro-batches): every one must pass, every iteration, on 2 and on 3 ranks.
PASSING = [
    ("worked6-half-sse", lambda: load(WORKED6), 1),                        # sum; 3+3, 2+2+2
    ("worked6-mse", lambda: load(WORKED6, loss="mse", steps=STEPS), 1),    # mean, equal shards
    ("worked6-mse-sum", lambda: load(WORKED6, loss=MSE_SUM), 1),           # reduction="sum"
    ("worked6-half-sse-accumulate-2", lambda: load(WORKED6), 2),           # 3+3 -> (2+1, 2+1) / (1+1+1) x 2
    ("three-layer-mse", lambda: load(THREE), 1),                           # mean, unequal: 4+3, 3+2+2
    ("three-layer-half-sse", lambda: load(THREE, loss="half-sse", optimizer=SUM_SGD), 1),  # sum, unequal
    ("three-layer-mse-accumulate-2", lambda: load(THREE), 2),              # unequal micro-shards
    ("three-layer-mse-sum-accumulate-2", lambda: load(THREE, loss=MSE_SUM, optimizer=SUM_SGD), 2),
    ("three-layer-adam", lambda: load(THREE, optimizer={"name": "adam", "lr": 0.01}), 1),  # optimizer state
    ("three-layer-float32", lambda: load(THREE, dtype="float32"), 1),
]
# --ddp-as-written where the usual step is right (a mean loss, equal shards, / K): must pass too
AS_WRITTEN_RIGHT = [
    ("as-written-mse-even", lambda: load(WORKED6, loss="mse"), 1),
    ("as-written-mse-even-accumulate-2", lambda: load(THREE, batch_size=12, n=24), 2),  # 3+3 / 2+2+2
]


def _cases(ranks):
    cases = [Case(d(), k, label=i) for i, d, k in PASSING]
    cases += [Case(d(), k, Setup(as_written=True), label=i) for i, d, k in AS_WRITTEN_RIGHT]
    cases.append(Case(load(THREE), 1, Setup(nudge=(ranks - 1, 3)), label="drift"))
    return cases + [m.case() for m in zoo_ddp.MISTAKES]


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def launched(request):
    """Every case on R gloo ranks, in one launch: {label: DistResult}."""
    ranks = request.param
    results = check(_cases(ranks), ranks)
    return ranks, {r.label: r for r in results}


@pytest.mark.parametrize("case_id", [c[0] for c in PASSING + AS_WRITTEN_RIGHT])
def test_every_iteration_matches_and_replicas_are_bitwise_equal(launched, case_id):
    ranks, results = launched
    r = results[case_id]
    assert r.ok, str(r.first_mismatch)
    assert r.ranks == ranks and r.backend == "gloo"
    assert r.steps_checked == STEPS
    assert r.replicas_bitwise
    expected = {"output", "loss", "delta", "grad", "param"}
    assert expected <= set(r.stats)
    if "adam" in case_id:
        assert "optim" in r.stats  # exp_avg, exp_avg_sq compared on every rank
    rtol, atol = tolerance(r.dtype)
    for stage, s in r.stats.items():
        assert s["max_abs_err"] <= atol + rtol * 100, (stage, s)
    assert r.final_loss["manual"] == pytest.approx(r.final_loss["reference"], rel=rtol * 100)


def test_the_check_sees_training_move(launched):
    """Frozen copies would match trivially: the loss after 20 iterations must differ from the first."""
    _, results = launched
    desc = load(WORKED6)
    first = manual.trainer.build(desc)
    first.load_state_dict(manual.init.initial_state(desc))
    x, y = map(np.asarray, (desc["data"]["x"], desc["data"]["y"]))
    assert results["worked6-half-sse"].final_loss["manual"] < 0.9 * first.train_step(x, y)["loss"]


def test_scaling_is_reported(launched):
    ranks, results = launched
    assert f"multiplied by {ranks} (the world size)" in results["worked6-half-sse"].scaling
    assert "R·n_r/N" in results["three-layer-mse"].scaling and "unequal" in results["three-layer-mse"].scaling
    assert results["worked6-half-sse"].reduction == "sum" and results["three-layer-mse"].reduction == "mean"
    assert results["worked6-mse-sum"].reduction == "sum"
    assert "--ddp-as-written" in results["as-written-mse-even"].scaling


@pytest.mark.parametrize("mistake", zoo_ddp.MISTAKES, ids=[m.id for m in zoo_ddp.MISTAKES])
def test_each_ddp_mistake_is_caught_where_expected_with_its_diagnosis(launched, mistake):
    ranks, results = launched
    r = results[mistake.id]
    m = r.first_mismatch
    assert not r.ok and m is not None
    assert (m.iteration, m.stage, m.name, m.rank) == (mistake.iteration, mistake.stage, mistake.tensor, mistake.rank)
    assert m.cause == mistake.cause, m.diagnosis
    assert m.diagnosis and str(m).endswith(m.diagnosis)


def test_summed_loss_as_written_is_off_by_the_world_size(launched):
    """Independent of the diagnosis: DDP's mean over ranks of the shards' sums is L / R."""
    ranks, results = launched
    m = results["ddp-summed-loss-not-rescaled"].first_mismatch
    assert m.reference == pytest.approx(m.manual / ranks, rel=1e-12)
    assert f"1/{ranks} of the full-batch gradient" in m.diagnosis


def test_unequal_shards_as_written_give_the_mean_of_means(launched):
    ranks, results = launched
    m = results["ddp-mean-loss-unequal-shards"].first_mismatch
    desc = load(THREE)
    x, y = _first_batch(desc)
    trainer = manual.trainer.build(desc)
    means = []
    for a, b in shards(len(x), ranks, 1)[0]:
        trainer.load_state_dict(manual.init.initial_state(desc))
        means.append(trainer.train_step(x[a:b], y[a:b])["loss"])
    assert m.reference == pytest.approx(np.mean(means), rel=1e-12)
    assert m.manual != pytest.approx(np.mean(means), rel=1e-6)


def _first_batch(desc):
    import manual.data
    return next(manual.data.batches(desc))


def test_a_rank_drifting_by_one_ulp_is_named(launched):
    """Rank R-1 moves one weight by one ulp after step 3: within tolerance of the manual value, so
    only the bitwise comparison of the replicas can see it, and it names that rank."""
    ranks, results = launched
    r = results["drift"]
    m = r.first_mismatch
    assert not r.ok and not r.replicas_bitwise
    assert (m.iteration, m.stage, m.name, m.rank) == (3, "replica", "layers.0.weight", ranks - 1)
    assert "(0, 0)" in m.detail and m.cause == "replica-drift"
    assert "param" in m.passed_before  # every rank was within tolerance of the manual step


# --- without launching processes -----------------------------------------------------------------

@pytest.mark.parametrize("n,ranks,k", [(6, 2, 1), (6, 3, 1), (7, 2, 1), (7, 3, 2), (5, 4, 1), (12, 2, 3)])
def test_shards_cover_the_batch_once_in_near_equal_parts(n, ranks, k):
    plan = shards(n, ranks, k)
    rows = [i for row in plan for a, b in row for i in range(a, b)]
    assert rows == list(range(n))
    sizes = [b - a for row in plan for a, b in row]
    assert max(sizes) - min(sizes) <= 1 + (n // k != -(-n // k))
    assert len(plan) == k and all(len(row) == ranks for row in plan)


@pytest.mark.parametrize("loss,expected", [("half-sse", "sum"), ("mse", "mean"), (MSE_SUM, "sum"),
                                           ({"name": "l1", "reduction": "mean"}, "mean")])
def test_batch_reduction_is_read_from_the_losses_values(loss, expected):
    assert batch_reduction(load(THREE, loss=loss)) == expected


def _local_grads(desc, x, y, plan, factor):
    """What DDP would produce if every rank multiplied its micro-batch loss by factor(n, N)."""
    trainer = manual.trainer.build(desc)
    state = manual.init.initial_state(desc)
    R, N = len(plan[0]), len(x)
    total = None
    for row in plan:
        for a, b in row:
            trainer.load_state_dict(state)
            g = trainer.train_step(x[a:b], y[a:b])["grads"]
            g = {n: factor(b - a, N) * v / R for n, v in g.items()}
            total = g if total is None else {n: total[n] + g[n] for n in g}
    return state, total


@pytest.mark.parametrize("path,loss,ranks,k,factor,cause", [
    (WORKED6, "half-sse", 2, 1, lambda n, N: 2.0, "ok"),
    (WORKED6, "half-sse", 3, 1, lambda n, N: 1.0, "sum-loss-averaged"),
    (WORKED6, "half-sse", 2, 2, lambda n, N: 0.5, "sum-loss-averaged"),
    (WORKED6, "half-sse", 2, 2, lambda n, N: 1.0, "sum-loss-averaged"),
    (THREE, "mse", 2, 1, lambda n, N: 1.0, "uneven-mean"),
    (THREE, "mse", 3, 1, lambda n, N: 3 * n / N, "ok"),
    (THREE, "mse", 2, 2, lambda n, N: 1.0, "accumulate-no-divide"),
    (THREE, "mse", 2, 1, lambda n, N: 0.3, "unknown"),
])
def test_diagnosis_names_the_mistake_that_explains_the_gradients(path, loss, ranks, k, factor, cause):
    """diagnose() is given gradients built by hand from the manual engine's shard gradients, as DDP
    would average them under a given loss factor, and must name the factor's mistake."""
    desc = load(path, loss=loss)
    x, y = _first_batch(desc)
    plan = shards(len(x), ranks, k)
    state, g = _local_grads(desc, x, y, plan, factor)
    found, line = diagnose(desc, state, x, y, plan, batch_reduction(desc), [g] * ranks, None)
    assert found == cause, line


def test_diagnosis_of_unsynchronised_gradients():
    desc = load(THREE)
    x, y = _first_batch(desc)
    plan = shards(len(x), 2, 1)
    state, g = _local_grads(desc, x, y, plan, lambda n, N: 2 * n / N)
    other = {n: v.copy() for n, v in g.items()}
    other["layers.1.weight"] = other["layers.1.weight"] * 1.5
    found, line = diagnose(desc, state, x, y, plan, "mean", [g, other], None)
    assert found == "left-out-of-buckets" and "'layers.1.weight'" in line
    assert diagnose(desc, state, x, y, plan, "mean", [g, g], 0)[0] == "no_sync-missing"
