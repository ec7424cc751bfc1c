"""The zoo: every classic mistake is caught by the lockstep at the iteration, stage and tensor where
it first shows, and the same code without the mistake passes on the same description."""
import dataclasses
import json

import pytest

from torch_ref import cli, mistakes, zoo
from torch_ref.lockstep import STAGES, lockstep

IDS = [e.id for e in zoo.ENTRIES]


@pytest.mark.parametrize("entry", zoo.ENTRIES, ids=IDS)
def test_mistake_is_caught_where_expected(entry):
    outcome = zoo.run_entry(entry)
    m = outcome.mismatch
    assert m is not None, f"{entry.id} was not caught"
    assert (m.iteration, m.stage, m.name) == (entry.iteration, entry.stage, entry.tensor), str(m)
    assert m.abs_err > m.atol + m.rtol * abs(m.reference)  # a real difference, not a shape or an exception
    assert outcome.as_expected


@pytest.mark.parametrize("entry", zoo.ENTRIES, ids=IDS)
def test_same_code_without_the_mistake_passes(entry):
    """The control: mistakes.Faulty unchanged is the correct algorithm, so each catch is the mistake's."""
    desc = entry.description()
    result = lockstep(desc, impl=mistakes.Faulty(desc))
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == desc["run"]["steps"] > entry.iteration


def test_at_least_twelve_distinct_mistakes_covering_every_stage():
    assert len(IDS) >= 12 and len(set(IDS)) == len(IDS)
    assert {e.stage for e in zoo.ENTRIES} == set(STAGES)
    assert all(e.mistake for e in zoo.ENTRIES)  # every entry says what the mistake is


def test_transposed_gradient_is_caught_on_square_layers():
    desc = zoo.entry("weight-grad-transposed").description()
    sizes = desc["network"]["sizes"]
    assert len(set(sizes)) == 1  # every weight is square: the shape cannot give the mistake away


def test_zoo_command_json_and_exit_code(capsys):
    assert cli.main(["zoo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
    assert out["ok"] is True
    assert [e["id"] for e in out["entries"]] == IDS
    for e in out["entries"]:
        assert e["caught"] and e["as_expected"]
        assert e["caught_at"] == e["expected"]
        assert e["mismatch"]["stage"] == e["expected"]["stage"]
    assert set(out["stages_covered"]) == set(STAGES)


def test_zoo_command_exits_1_when_a_mistake_is_not_caught_where_expected(monkeypatch, capsys):
    wrong = dataclasses.replace(zoo.entry("loss-grad-sign"), stage="grad", tensor="layers.1.weight")
    monkeypatch.setattr(zoo, "ENTRIES", [wrong, zoo.entry("loss-missing-half")])
    assert cli.main(["zoo"]) == 1
    out = capsys.readouterr().out
    assert "CAUGHT; expected iteration 0, grad, layers.1.weight" in out
    assert "1 / 2 mistakes caught where expected" in out


def test_applies_follows_the_network():
    worked = zoo.worked()
    applies = {e.id for e in zoo.ENTRIES if e.applies(worked)}
    assert "hidden-error-through-updated-weights" in applies and "frozen-bias-updated" in applies
    assert not applies & {"mean-loss-grad-not-divided-by-batch", "bias-grad-averaged-over-batch",
                          "momentum-buffer-restarted", "adam-without-bias-correction",
                          "cross-entropy-without-target"}


def test_control_keeps_the_engines_clipping_and_schedule():
    """mistakes.Faulty is the engine's own step: with gradient clipping, a schedule and momentum it
    still matches torch, so a zoo entry differs from the engine only by its mistake."""
    from torch_ref import spec
    desc = spec.parse({
        "network": {"sizes": [3, 4, 2], "activation": ["tanh", "identity"], "loss": "mse"},
        "init": {"seed": 0},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "scheduler": {"name": "step", "step_size": 2, "gamma": 0.5},
        "clip": {"max_norm": 0.05},
        "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4},
        "run": {"steps": 6},
    })
    result = lockstep(desc, impl=mistakes.Faulty(desc))
    assert result.ok and result.steps_checked == 6, str(result.first_mismatch)
    assert "optim" in result.stats
