"""scripts/bench.py: its operation count, checked against torch's own FLOP counter on real
training steps, and its bookkeeping. (Its timings are reported by the script, never asserted.)"""
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import bench  # noqa: E402

FLOP_CASES = [([784, 256, 256, 10], 128), ([2048, 2048, 2048, 10], 2), ([5, 3], 4), ([7, 6, 5, 4], 3)]


@pytest.mark.parametrize("sizes,batch", FLOP_CASES, ids=["-".join(map(str, s)) for s, _ in FLOP_CASES])
def test_step_flops_match_torchs_count_of_a_training_step(sizes, batch):
    """Forward, then backward with an input that needs no gradient: what a training step multiplies."""
    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[m for i, o in zip(sizes[:-1], sizes[1:]) for m in (torch.nn.Linear(i, o), torch.nn.ReLU())])
    with FlopCounterMode(display=False) as counter:
        layers(torch.randn(batch, sizes[0])).square().mean().backward()
    assert bench.step_flops(sizes, batch) == counter.get_total_flops()


def test_ratios_are_taken_within_each_repeat():
    """A slow spell that doubles both sides of one repeat leaves that repeat's ratio alone."""
    times = {"a": [1.0, 2.0, 1.1], "b": [2.0, 4.0, 2.0]}
    assert bench.ratio(times, "a", "b") == pytest.approx(0.5)
    assert bench.medians(times) == {"a": 1.1, "b": 2.0}


@pytest.mark.parametrize("order", [0, 1])
def test_interleave_alternates_the_order(order, monkeypatch):
    monkeypatch.setattr(bench, "REST", 0.0)
    monkeypatch.setattr(bench, "WINDOW", 0.0)
    calls = []
    contenders = {name: (lambda steps, name=name: calls.append((name, steps)), 5) for name in "xyz"}
    times = bench.interleave(contenders, 2 + order)
    timed = [name for name, steps in calls if steps == 5]  # after the warm-up runs (3 steps each)
    assert timed == list("xyzzyx" + "xyz" * order)
    assert all(len(t) == 2 + order for t in times.values())


def test_a_short_run_is_repeated_to_fill_its_window(monkeypatch):
    """A clock that moves 0.02 s a run: three runs of 4 steps fill a 0.05 s window, and the time per
    step is the window's 0.06 s over 3 x 4 steps (not a real timing: the clock is the test's)."""
    clock = iter([0.0, 0.02, 0.04, 0.06])
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    calls = []
    per_step = bench.timed(lambda steps: calls.append(steps), 4, window=0.05)
    assert calls == [4, 4, 4] and per_step == pytest.approx(0.06 / 12, rel=1e-12)
    monkeypatch.undo()
    calls.clear()
    bench.timed(lambda steps: calls.append(steps), 4, window=0.0)
    assert calls == [4]


@pytest.mark.parametrize("batch,input_shape", [(1, (1, 28, 28)), (3, (1, 28, 28)), (2, (1, 32, 32))])
def test_lenet_flops_match_torchs_count_of_a_training_step(batch, input_shape):
    """Case 6's count, and so the bare products' shapes, against torch's own FLOP counter on the
    twin's forward and backward, the input needing no gradient (the first conv's grad_input is not
    counted by torch and not computed by either side)."""
    _, twin = bench.lenet(input_shape=input_shape)
    x, y = bench.lenet_batch(batch, input_shape)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    assert bench.lenet_flops(batch, input_shape) == counter.get_total_flops()


def test_lenet_sides_are_the_same_net_and_take_the_same_steps():
    """The manual net and the twin start from the same parameters, and the bench's step functions
    train them alike: after two steps, the same parameters on both sides (float32's tolerance)."""
    from torch_ref.testing import compare, tolerance
    mine, twin = bench.lenet()
    x, y = bench.lenet_batch(4)
    bench.lenet_steps("manual", mine, x, y, lr=0.5)(2)
    bench.lenet_steps("twin", twin, x, y, lr=0.5)(2)
    params = dict(mine.named_parameters())
    assert sorted(params) == sorted(n for n, _ in twin.named_parameters())
    for name, p in twin.named_parameters():
        moved = p.detach().numpy()
        assert compare(params[name].data, moved, *tolerance("float32")).ok, name
    start = dict(bench.lenet()[1].named_parameters())
    assert any(not torch.equal(start[n], p) for n, p in twin.named_parameters())  # the steps did move them


def test_cases_run_only_those_named(monkeypatch, capsys):
    """--case picks the cases; the table has only their sections."""
    ran = []
    monkeypatch.setattr(bench, "CASES", {k: (lambda k=k: ran.append(k) or {}) for k in "123456"})
    monkeypatch.setattr(bench, "table", lambda r: " ".join(sorted(k for k in r if k.startswith("case"))))
    monkeypatch.setattr(sys, "argv", ["bench", "--case", "6", "--case", "2"])
    bench.main()
    assert ran == ["2", "6"] and capsys.readouterr().out.strip() == "case2 case6"


def test_the_recurrent_case_times_the_same_training_step_on_both_sides():
    """Case 7: one step of manual's LSTM and one of torch's, from the same parameters on the same
    batch, leave the same parameters (so the ratio compares equal work)."""
    import numpy as np
    sizes = (3, 5, 4, 2)
    mine, twin = bench.lstm_pair(sizes=sizes)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 4, 3)).astype(np.float32), rng.standard_normal((2, 4, 5)).astype(np.float32)
    bench.lstm_steps("manual", mine, x, y, lr=0.5)(2)
    bench.lstm_steps("twin", twin, x, y, lr=0.5)(2)
    for (name, p), (_, q) in zip(mine.named_parameters(), twin.named_parameters()):
        assert np.allclose(p.data, q.detach().numpy(), rtol=1e-4, atol=1e-6), name
    assert not np.allclose(mine.weight_hh_l0.data, bench.lstm_pair(sizes=sizes)[0].weight_hh_l0.data)


def test_the_numpy_floor_takes_the_manual_engines_steps():
    """The floor (scripts/bench_floor.py) is the measured limit only if it does the manual step's
    work: from the same start on the same batches, the same parameters after three steps."""
    import numpy as np
    import manual.data
    from torch_ref.lockstep.solo import build
    from torch_ref.testing import compare, tolerance
    desc = bench.mlp_desc([12, 9, 7, 3], ["relu", "relu", "identity"], 5)
    mine = build(desc, "manual")
    floor = bench.FloorMLP(bench.manual.init.initial_state(desc), 5, desc["optimizer"]["lr"] * 50, np.float32)
    mine.optimizer.lr *= 50  # steps large enough to move the parameters well past float32's tolerance
    batches = manual.data.batches(desc, np.float32)
    for _ in range(3):
        x, y = next(batches)
        assert compare(floor.step(x, y), mine.step(x, y), *tolerance("float32")).ok
    state = mine.state_dict()
    start = bench.manual.init.initial_state(desc)
    for k in range(3):
        for name, got in ((f"layers.{k}.weight", floor.weight[k]), (f"layers.{k}.bias", floor.bias[k])):
            assert compare(got, state[name], *tolerance("float32")).ok, name
            assert not compare(got, start[name], *tolerance("float32")).ok, name  # they moved


def test_the_phase_by_phase_profile_times_the_engines_own_step(monkeypatch):
    """sections() runs Trainer's step phase by phase: the parameters it leaves are those of
    Trainer.step on the same batches."""
    import numpy as np
    import manual.data
    from torch_ref.lockstep.solo import build
    desc = bench.mlp_desc([6, 5, 2], ["relu", "identity"], 4)
    made = []
    real_build = bench.build
    monkeypatch.setattr(bench, "build", lambda d, side: made.append(real_build(d, side)) or made[-1])
    spent = bench.sections(desc, 2)
    assert set(spent) == {"zero_grad", "forward", "loss", "backward", "optimizer"}
    mine, batches = build(desc, "manual"), manual.data.batches(desc, np.float32)
    for _ in range(5):  # sections' 3 warm-up steps and its 2 timed ones
        mine.step(*next(batches))
    for name, value in mine.state_dict().items():
        assert np.array_equal(value, made[0].state_dict()[name]), name


@pytest.mark.parametrize("sizes", [(3, 5, 4, 2), (2, 3, 1, 3), (4, 2, 6, 1)])
def test_lstm_products_are_what_torch_counts_on_an_unrolled_cell(sizes):
    """Case 7's bare products: torch's FlopCounterMode on an LSTMCell unrolled over the sequence,
    forward and backward from an mse over every output, the input needing no gradient (the fused
    nn.LSTM is not counted by FlopCounterMode on the CPU)."""
    f, h, t, n = sizes
    torch.manual_seed(0)
    cell, x = torch.nn.LSTMCell(f, h), torch.randn(n, t, f)
    with FlopCounterMode(display=False) as counter:
        state, outs = None, []
        for step in range(t):
            state = cell(x[:, step], state)
            outs.append(state[0])
        torch.stack(outs, 1).square().mean().backward()
    assert sum(2 * a * b * c for a, b, c in bench.lstm_products(sizes)) == counter.get_total_flops()


@pytest.mark.parametrize("width", [3, 8])
def test_compared_elements_counts_every_stage(width):
    """Case 4's count per iteration: output (N), deltas (N per unit of every layer), gradients and
    parameters after the update (each the parameter count), the loss."""
    desc = bench.mlp_desc([width, width, width, 1], "tanh", 16, dtype="float64", steps=1)
    params = 2 * (width * width + width) + width + 1
    assert bench.compared_elements(desc) == 16 + 16 * (2 * width + 1) + 2 * params + 1


def _run(value):
    """A results dict with every case's ratios at `value` (case 4 at three sizes)."""
    size = {"params": 1, "compared_elements": 2, "per_step_s": {"manual": 1e-6, "twin": 1e-6, "lockstep": 2e-6},
            "overhead_per_element_s": 1e-9, "comparison_per_element_s": 1e-9, "lockstep/(manual+twin)": value,
            "results/(manual+twin)": value}
    mlp = {"sizes": [1], "batch": 1, "per_step_s": {k: 1e-3 for k in ("manual", "twin", "bare_matmul")},
           "gflop_s": {k: 1.0 for k in ("manual", "twin", "bare_matmul")}, "manual/twin": value,
           "manual/bare_matmul_gflops": value}
    return {"environment": {}, "repeats": 1, "case1": {"per_step_s": {"manual": 1e-6, "twin": 1e-6, "lockstep": 1e-6},
                                                      "manual/twin": value, "lockstep/twin": value,
                                                      "results/twin": value},
            "case2": mlp, "case4": [size] * 3, "case5": {"manual": 1, "twin": 2, "manual/twin": value},
            "case8": {"skipped": "no C compiler (cc)"}}


@pytest.mark.parametrize("value,held", [(0.05, [True, True, True, False, True, True, True, True]),
                                        (0.95, [False, True, False, True, True, True, True, True])])
def test_each_target_is_judged_by_its_own_bound(value, held):
    """verdicts(): "<=" and ">=" bounds, case 4 at each size, a skipped case left out."""
    rows = bench.verdicts(_run(value))
    assert [(case.split()[0], key) for case, key, *_ in rows] == [
        ("case1", "manual/twin"), ("case1", "lockstep/twin"), ("case2", "manual/twin"),
        ("case2", "manual/bare_matmul_gflops"), ("case4", "lockstep/(manual+twin)"),
        ("case4", "lockstep/(manual+twin)"), ("case4", "lockstep/(manual+twin)"), ("case5", "manual/twin")]
    assert [row[5] for row in rows] == held
    assert bench.table(_run(value)).endswith(f"targets held: {sum(held)} of 8" + ("" if all(held) else
                                             "; missed: " + ", ".join(f"{c} {k}" for c, k, *_, h in rows if not h)))


def test_the_docs_quote_a_full_run():
    """docs/speed.md's table is the script's table of the run kept in docs/assets/bench.json (both
    written by `scripts/bench.py --docs`): a full run (every case, the full repeats) of the current
    script's format."""
    import json
    r = json.loads(bench.RUN.read_text())
    assert r["repeats"] == bench.REPEATS and sorted(r) == sorted(["environment", "repeats"] + [f"case{k}" for k in bench.CASES])
    doc = bench.DOC.read_text()
    block = doc[doc.index(bench.BEGIN):doc.index(bench.END)]
    assert block == f"{bench.BEGIN}\n```\n{bench.table(r)}\n```\n"
