"""`--only manual|twin`: one side trained alone reaches the same final loss as in the lockstep."""
import json

import pytest

from torch_ref.cli import main as cli
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.solo import train_alone

from conftest import SPECS, make_desc


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_side_alone_ends_where_the_lockstep_ends(dtype):
    desc = make_desc([4, 8, 8, 2], ["tanh", "relu", "sigmoid"], batch_size=5, n=12, steps=37, dtype=dtype)
    checked = lockstep(desc)
    assert checked.ok, str(checked.first_mismatch)
    for side, key in (("manual", "manual"), ("twin", "reference")):
        alone = train_alone(desc, side)
        assert alone.steps == 37 and alone.seconds > 0 and alone.per_step == alone.seconds / 37
        assert alone.to_json()["seconds_per_step"] == alone.per_step and alone.to_json()["side"] == side
        assert alone.final_loss == pytest.approx(checked.final_loss[key], rel=1e-12 if dtype == "float64" else 1e-5)


def test_only_in_the_command(capsys):
    assert cli.main(["run", str(SPECS / "worked_example.toml"), "--only", "manual", "--steps", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["side"] == "manual" and out["steps"] == 100 and out["seconds"] > 0
    assert out["seconds_per_step"] == pytest.approx(out["seconds"] / 100, rel=1e-12)  # per step, not in all
    assert cli.main(["run", str(SPECS / "worked_example.toml"), "--only", "nobody"]) == 2
    assert "--only" in capsys.readouterr().err
