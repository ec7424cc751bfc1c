"""scripts/bench.py: its operation count, checked against torch's own FLOP counter on real
training steps, and its bookkeeping. (Its timings are reported by the script, never asserted.)"""
import sys
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


def test_a_short_run_is_repeated_to_fill_its_window():
    calls = []
    per_step = bench.timed(lambda steps: calls.append(steps), 4, window=0.05)
    assert len(calls) > 1 and per_step > 0
    calls.clear()
    bench.timed(lambda steps: calls.append(steps), 4, window=0.0)
    assert calls == [4]
