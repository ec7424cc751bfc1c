"""The zoo: the command, its exit code and JSON, and where its mistakes apply (each mistake caught
where it first shows, and its control: tests/test_mistakes.py)."""
import dataclasses
import json

import pytest

from torch_ref.cli import main as cli
from torch_ref.zoo import faulty
from torch_ref.zoo import runner as zoo
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.verdict import STAGES

IDS = [e.id for e in zoo.ENTRIES]


# every entry caught where it says (float64, float32 resync and free), and the same runs passing
# with the engine unbroken: tests/test_mistakes.py, over the whole registry


def test_transposed_gradient_is_caught_by_its_values_on_square_layers():
    """On square weights a transposed gradient has the right shape: it must be caught by its values."""
    e = zoo.entry("weight-grad-transposed")
    desc = e.description()
    assert len(set(desc["network"]["sizes"])) == 1  # every weight is square: the shape cannot give it away
    m = lockstep(desc, impl=e(desc)).first_mismatch
    assert (m.stage, m.name) == ("grad", "layers.1.weight") and "shape" not in str(m), str(m)
    i, j = m.index
    assert i != j and (m.n_bad, m.numel) == (6, 9), str(m)  # the off-diagonal elements, all of them and only them


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
    worked = faulty.worked()
    applies = {e.id for e in zoo.ENTRIES if e.applies(worked)}
    assert "hidden-error-through-updated-weights" in applies and "frozen-bias-updated" in applies
    assert not applies & {"mean-loss-grad-not-divided-by-batch", "bias-grad-averaged-over-batch",
                          "momentum-buffer-restarted", "adam-without-bias-correction",
                          "cross-entropy-without-target"}
