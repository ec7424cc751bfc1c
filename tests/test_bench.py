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
