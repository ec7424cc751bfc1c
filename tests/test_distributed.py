"""Data-parallel lockstep (torch_ref/distributed/): DDP on gloo ranks against the manual
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
from torch_ref import api
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.zoo import ddp as zoo_ddp
from torch_ref.distributed import (Case, RankFailure, Setup, batch_reduction, check, diagnose, free_port,
                                   shards)
from torch_ref.testing import tolerance
from torch_ref.lockstep.verdict import Result

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "torch_ref" / "specs"
WORKED6 = SPECS / "worked_example_batch6.toml"
THREE = SPECS / "three_layer_minibatch.toml"
STEPS = 5  # past every case's first epoch (the 3-layer data: 4 batches of 7) and the drift at iteration 3


def load(path, steps=STEPS, loss=None, batch_size=None, optimizer=None, dtype=None, n=None, scheduler=None):
    raw = tomllib.loads(path.read_text())
    if scheduler is not None:
        raw["scheduler"] = scheduler
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
    ("three-layer-cross-entropy", lambda: load(THREE, loss="cross_entropy"), 1),  # class-index targets
    ("three-layer-adam", lambda: load(THREE, optimizer={"name": "adam", "lr": 0.01}), 1),  # optimizer state
    ("three-layer-float32", lambda: load(THREE, dtype="float32"), 1),
]
# issue 14's descriptions: each must pass as above and change the run (VARIANTS: id -> the same
# description without it, whose final loss must differ), so that DDP honours what manual honours
GROUPS = {"name": "sgd", "lr": 0.1, "momentum": 0.9,
          "param_groups": [{"params": "*.weight", "lr": 0.05, "weight_decay": 0.5}]}
VARIANTS = {
    "three-layer-param-groups": "three-layer-momentum",
    "three-layer-steplr-per-epoch": "three-layer-batch14",  # 2 iterations an epoch: rates change at 2 and 4
    "three-layer-lambdalr": "three-layer-mse",
    "three-layer-nadam": "three-layer-adam",
    "three-layer-rmsprop-eps-inside-sqrt": "three-layer-rmsprop",
}
PASSING += [
    ("three-layer-momentum", lambda: load(THREE, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}), 1),
    ("three-layer-param-groups", lambda: load(THREE, optimizer=GROUPS), 1),
    ("three-layer-batch14", lambda: load(THREE, batch_size=14), 1),
    ("three-layer-steplr-per-epoch", lambda: load(THREE, batch_size=14, scheduler={
        "name": "StepLR", "step_size": 1, "gamma": 0.5, "interval": "epoch"}), 1),
    ("three-layer-lambdalr", lambda: load(THREE, scheduler={"name": "LambdaLR", "lr_lambda": "1 / (1 + step)"}), 1),
    ("three-layer-nadam", lambda: load(THREE, optimizer={"name": "nadam", "lr": 0.01}), 1),
    ("three-layer-rmsprop", lambda: load(THREE, optimizer={"name": "rmsprop", "lr": 0.01, "eps": 0.01}), 1),
    ("three-layer-rmsprop-eps-inside-sqrt", lambda: load(THREE, optimizer={
        "name": "rmsprop", "lr": 0.01, "eps": 0.01, "eps_inside_sqrt": True}), 1),
]
# --ddp-as-written where the usual step is right (a mean loss, equal shards, / K): must pass too
AS_WRITTEN_RIGHT = [
    ("as-written-mse-even", lambda: load(WORKED6, loss="mse"), 1),
    ("as-written-mse-even-accumulate-2", lambda: load(THREE, batch_size=12, n=24), 2),  # 3+3 / 2+2+2
]

# (id, description, (rank, iteration, part, key) of one wrong value in that rank's report, where it
# must be caught (iteration, stage, tensor)): rank "last" is R - 1. Each rank reports its own values
# to rank 0 (gathered), and a wrong one must be named with that rank, at that iteration and tensor:
# a gather that mixed up the ranks, or rows put back in the wrong order, would name another.
PLANTED = [
    ("plant-output", lambda: load(THREE, steps=5), ("last", 2, "output", None), (2, "output", "output")),
    ("plant-loss", lambda: load(THREE, steps=5), ("last", 1, "loss", None), (1, "loss", "loss")),
    ("plant-delta", lambda: load(THREE, steps=5), ("last", 1, "deltas", 0), (1, "delta", "layers.0")),
    ("plant-grad", lambda: load(THREE, steps=5), (1, 3, "grads", "layers.1.bias"), (3, "grad", "layers.1.bias")),
    ("plant-optim", lambda: load(THREE, steps=5, optimizer={"name": "adam", "lr": 0.01}),
     ("last", 2, "optimizer_state", "layers.0.weight.exp_avg"), (2, "optim", "layers.0.weight.exp_avg")),
    ("plant-param", lambda: load(THREE, steps=5), (0, 4, "state_dict", "layers.2.weight"), (4, "param", "layers.2.weight")),
]


def _planted_rank(rank, ranks):
    return ranks - 1 if rank == "last" else rank


def _cases(ranks):
    cases = [Case(d(), k, label=i) for i, d, k in PASSING]
    cases += [Case(d(), k, Setup(as_written=True), label=i) for i, d, k in AS_WRITTEN_RIGHT]
    cases.append(Case(load(THREE), 1, Setup(nudge=(ranks - 1, 3)), label="drift"))
    cases += [Case(d(), 1, Setup(plant=(_planted_rank(p[0], ranks), *p[1:])), label=i) for i, d, p, _ in PLANTED]
    return cases + [m.case() for m in zoo_ddp.MISTAKES]


@pytest.fixture(scope="module", params=[2, pytest.param(3, marks=pytest.mark.slow)], ids=["2-ranks", "3-ranks"])
# (3 ranks under -m slow: the default profile's launch of 3 is the command line's, below)
def launched(request):
    """Every case on R gloo ranks, in one launch: {label: Result}."""
    ranks = request.param
    results = check(_cases(ranks), ranks)
    return ranks, {r.parallel.label: r for r in results}


@pytest.mark.parametrize("case_id", [c[0] for c in PASSING + AS_WRITTEN_RIGHT])
def test_every_iteration_matches_and_replicas_are_bitwise_equal(launched, case_id):
    ranks, results = launched
    r = results[case_id]
    assert r.ok, str(r.first_mismatch)
    assert r.parallel.ranks == ranks and r.parallel.backend == "gloo"
    assert r.steps_checked == STEPS
    assert r.parallel.replicas_bitwise
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


@pytest.mark.parametrize("case_id", list(VARIANTS))
def test_groups_schedules_and_optimizer_variants_are_checked_not_ignored(launched, case_id):
    """Parameter groups, torch's schedules (per epoch too), NAdam, ε inside √ run data-parallel: they
    pass, and each changes the run (a DDP side that ignored it would fail the manual comparison;
    both ignoring it would give the plain case's loss)."""
    _, results = launched
    result, plain = results[case_id], results[VARIANTS[case_id]]
    assert result.ok and plain.ok, result.summary()
    assert result.final_loss["manual"] != pytest.approx(plain.final_loss["manual"], rel=1e-6)


def test_scaling_is_reported(launched):
    ranks, results = launched
    assert f"multiplied by {ranks} (the world size)" in results["worked6-half-sse"].parallel.scaling
    assert "R·n/N" in results["three-layer-mse"].parallel.scaling and "unequal" in results["three-layer-mse"].parallel.scaling
    assert results["worked6-half-sse"].parallel.reduction == "sum" and results["three-layer-mse"].parallel.reduction == "mean"
    assert results["worked6-mse-sum"].parallel.reduction == "sum"
    assert "--ddp-as-written" in results["as-written-mse-even"].parallel.scaling


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
    assert not r.ok and not r.parallel.replicas_bitwise
    assert (m.iteration, m.stage, m.name, m.rank) == (3, "replica", "layers.0.weight", ranks - 1)
    assert "(0, 0)" in m.detail and m.cause == "replica-drift"
    assert "param" in m.passed_before  # every rank was within tolerance of the manual step


@pytest.mark.parametrize("case_id,plant,where", [p[0:1] + p[2:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_a_wrong_value_from_one_rank_is_named_with_that_rank(launched, case_id, plant, where):
    """One rank reports one wrong value at one iteration: the run stops there, at that stage and
    tensor, naming that rank, with every earlier iteration passed."""
    ranks, results = launched
    r = results[case_id]
    m = r.first_mismatch
    assert not r.ok and r.steps_checked == where[0], str(m)
    assert (m.iteration, m.stage, m.name, m.rank) == (*where, _planted_rank(plant[0], ranks)), str(m)
    assert m.diagnosis  # every mismatch gets one, whatever the stage


def test_a_data_parallel_result_is_the_lockstep_result(launched):
    """One result type: the lockstep's Result, its JSON the single-process one plus the record's fields."""
    ranks, results = launched
    r = results["three-layer-mse"]
    assert isinstance(r, Result) and r.mode == "free" and r.impl == "manual"
    out = json.loads(cli._dumps(r.to_json()))
    assert {"ok", "steps_checked", "first_mismatch", "stats", "max_abs_err", "final_loss", "dtype"} <= set(out)
    assert (out["ranks"], out["accumulate"], out["backend"], out["reduction"]) == (ranks, 1, "gloo", "mean")
    assert out["replicas_bitwise"] is True and out["label"] == "three-layer-mse"
    bad = json.loads(cli._dumps(results["plant-grad"].to_json()))["first_mismatch"]
    assert bad["rank"] == 1 and bad["stage"] == "grad" and bad["cause"] and bad["diagnosis"]


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


# --- faults: a rank that raises, dies or hangs stops the run, is named, leaves nothing behind ----

def _gone(pids, wait=10.0):
    """True once none of `pids` exists (a bounded wait for the kernel to reap them, not a timing test)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        alive = [p for p in pids if _exists(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _exists(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind,cause", [("raise", "RuntimeError: fault injected on purpose at iteration 2"),
                                        ("exit", "exited with code 3"),
                                        ("hang", "hung"),
                                        # SIGSTOP: its peer times out, it is to blame (waits out the
                                        # timeout as "hang" does: the default profile has that one)
                                        pytest.param("stop", "stopped", marks=pytest.mark.slow)])
def test_a_failing_rank_is_named_and_the_others_are_stopped(kind, cause):
    started = []
    with pytest.raises(RankFailure) as info:
        check([Case(load(WORKED6))], 2, timeout=2.0, fault=(1, 2, kind), on_start=started.extend)
    e = info.value
    assert (e.rank, e.cause, e.exit_code) == (1, cause, 1), str(e)
    assert "rank 1" in str(e) and "at iteration 2" in str(e)
    assert len(started) == 2 and _gone(started)


@pytest.mark.slow  # waits out its 2 s as "hang" does (the default profile's unresponsive rank)
def test_the_watchdog_stops_ranks_that_all_hang_outside_collectives():
    """No collective is waiting, so no backend timeout can fire: the parent's watchdog must."""
    started = []
    with pytest.raises(RankFailure) as info:
        check([Case(load(WORKED6))], 2, timeout=30.0, fault=(None, 1, "hang"), on_start=started.extend,
              watchdog=2.0)
    e = info.value
    assert e.cause == "hung" and e.exit_code == 1 and "no rank made progress for 2 s" in str(e), str(e)
    assert _gone(started)


def _descendants(root):
    """Every process below `root` now, from /proc (ppid links)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def _is_rank(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
    except OSError:
        return False
    return b"forkserver" in cmd or b"spawn_main" in cmd


@pytest.mark.slow  # the default profile has a rank that exits (test_a_failing_rank_is_named...) and SIGTERM to the parent
def test_a_rank_killed_mid_run_is_reported_and_nothing_is_left_behind():
    """SIGKILL one rank of `backprop-check run --ranks 2` while it trains: the command must stop the
    other rank, name the killed one (by its pid) and the signal, exit non-zero, and leave no process."""
    cmd = [sys.executable, "-m", "torch_ref.cli.main", "run", str(WORKED6), "--ranks", "2", "--steps", "10000000",
           "--timeout", "10"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen, victim, end = set(), None, time.monotonic() + 240
        while victim is None and time.monotonic() < end and proc.poll() is None:
            family = _descendants(proc.pid)
            seen.update(family)
            ranks = [p for p in family if _is_rank(p) and not _descendants(p)]  # the forked ranks are leaves
            training = [p for p in ranks if _cpu_ticks(p) > 50]  # > 0.5 s of CPU: past start-up, training
            if len(ranks) >= 2 and training:
                victim = training[-1]
            time.sleep(0.2)
        assert victim is not None, "the ranks never started training"
        time.sleep(0.5)
        seen.update(_descendants(proc.pid))
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    line = [l for l in err.splitlines() if "data-parallel run stopped" in l]
    assert len(line) == 1, err
    assert f"(pid {victim})" in line[0] and "was killed by signal SIGKILL at iteration" in line[0], line[0]
    assert "the other ranks were stopped" in line[0]
    assert _gone(seen), [p for p in seen if _exists(p)]


# --- the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,ranks", [pytest.param(WORKED6, 2, marks=pytest.mark.slow),
                                        pytest.param(WORKED6, 3, marks=pytest.mark.slow),
                                        pytest.param(THREE, 2, marks=pytest.mark.slow), (THREE, 3)])
# (every case runs in the default profile's two launches, test_every_iteration_matches...; the command
# line's own launch once by default; the docs check launches `run ... --ranks 2` too)
def test_cli_run_ranks_passes_every_iteration(path, ranks, capsys):
    """The issue's 'done when': the full spec (30 iterations), exit 0, every stage within tolerance."""
    code = cli.main(["run", str(path), "--ranks", str(ranks), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] and out["steps_checked"] == 30 and out["ranks"] == ranks
    assert out["replicas_bitwise"] and out["first_mismatch"] is None


def test_cli_as_written_mismatch_exits_1_with_a_diagnosis(capsys):
    code = cli.main(["run", str(WORKED6), "--ranks", "2", "--ddp-as-written", "--steps", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "lockstep mismatch at iteration 0, stage 'loss', tensor 'loss', rank 0" in out
    assert "diagnosis: half-sse sums over samples but DDP averages gradients over the 2 ranks" in out


@pytest.mark.parametrize("args,field", [
    (["--ranks", "7"], "--ranks"),                         # 6 samples for 7 ranks
    (["--ranks", "0"], "--ranks"),
    (["--ranks", "2", "--accumulate", "4"], "--ranks"),    # 2 x 4 > 6
    (["--ranks", "2", "--accumulate", "0"], "--accumulate"),
    (["--accumulate", "2"], "--ranks"),
    (["--ranks", "2", "--timeout", "0"], "--timeout"),
    (["--ranks", "2", "--mode", "resync"], "--mode"),
])
def test_cli_bad_data_parallel_setup_is_one_line_and_exit_2(args, field, capsys):
    code = cli.main(["run", str(WORKED6), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"backprop-check: error: {field}: "), err


@pytest.mark.parametrize("kwargs,field", [
    ({"accumulate": 2}, "ranks"),
    ({"timeout": 5.0}, "ranks"),
    ({"ranks": 2, "mode": "resync"}, "mode"),
    ({"ranks": 2, "fd_steps": 1}, "fd_steps"),
    ({"ranks": 2, "skip_stages": ["loss"]}, "skip_stages"),
    ({"ranks": 2, "impl": "scripts/seed_port.py:build"}, "impl"),
    ({"ranks": 7}, "--ranks"),  # 6 samples for 7 ranks
])
def test_api_refuses_what_the_data_parallel_check_cannot_do(kwargs, field):
    """api.check(..., ranks=R) refuses, before any process starts, what it cannot run, naming the argument."""
    with pytest.raises(spec.SpecError) as info:
        api.check(WORKED6, **kwargs)
    assert info.value.field == field, str(info.value)


def test_cli_zoo_ddp(capsys):
    code = cli.main(["zoo", "--ddp"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(zoo_ddp.MISTAKES)} / {len(zoo_ddp.MISTAKES)} data-parallel mistakes caught where expected" in out


def test_module_outside_torchrun_says_how_to_start_it(monkeypatch, capsys):
    from torch_ref import distributed
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.main([str(WORKED6)]) == 2
    assert capsys.readouterr().err.startswith("backprop-check: error: WORLD_SIZE: not set: start this module with torchrun")


# --- torchrun, two "machines" on loopback ------------------------------------------------------

@pytest.mark.slow  # a process-launching test of a kind the default profile already has (ranks)
def test_torchrun_two_nodes_on_loopback():
    """The README's multi-machine command, with both "machines" on 127.0.0.1: two torchrun agents,
    --nnodes 2, one process each, meeting at one rendezvous endpoint."""
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback",
           "-m", "torch_ref.distributed", str(WORKED6), "--steps", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    try:
        outs = [n.communicate(timeout=300)[0] for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()
                n.communicate()
    assert [n.returncode for n in nodes] == [0, 0], outs
    reports = [o for o in outs if "PASS: 5 iteration(s) checked in lockstep, DistributedDataParallel on 2 rank(s)" in o]
    assert len(reports) == 1, outs  # rank 0 reports, on whichever node it landed
    assert "parameters bitwise identical on every rank at every iteration checked: yes" in reports[0]


# --- CUDA / nccl -----------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason=f"nccl needs one GPU per rank: 2 wanted, {torch.cuda.device_count()} present")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nccl_two_gpus(dtype):
    desc = load(THREE, dtype=dtype)
    desc["run"]["device"] = "cuda"
    (r,) = check([Case(desc)], 2)
    assert r.parallel.backend == "nccl" and r.ok, str(r.first_mismatch)
    assert r.parallel.replicas_bitwise and r.steps_checked == STEPS
