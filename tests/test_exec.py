"""--impl "exec:...": the reference clients pass through the process protocol, and a planted bug
is caught where it is: clients/mlp.c (compiled with cc once per session; skipped where there is
no cc) and the Python client (torch_ref/implementation/client.py) in its own interpreter."""
import io
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_ref import check
from torch_ref.cli import main as cli
from torch_ref.implementation import wire

from conftest import SPECS

ROOT = Path(__file__).resolve().parent.parent
MOMENTUM = ROOT / "clients" / "momentum.toml"  # the C client's description (docs/protocol.md)


@pytest.fixture(scope="session")
def c_client(tmp_path_factory):
    """clients/mlp.c compiled twice: as written, and with -DPLANTED_BUG."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on this machine: .ci/run installs gcc")
    out = tmp_path_factory.mktemp("c_client")
    built = {}
    for name, flags in (("mlp", []), ("mlp_bug", ["-DPLANTED_BUG"])):
        built[name] = out / name
        subprocess.run([cc, "-O2", *flags, "-o", str(built[name]), str(ROOT / "clients" / "mlp.c"), "-lm"], check=True)
    return built


def spec(tmp_path, momentum=0.9, dtype="float64"):
    f = tmp_path / "momentum.toml"
    f.write_text(MOMENTUM.read_text().replace("momentum = 0.9", f"momentum = {momentum}")
                 .replace('dtype = "float64"', f'dtype = "{dtype}"'))
    return str(f)


@pytest.mark.parametrize("mode,momentum,dtype", [
    ("free", 0.9, "float64"), ("resync", 0.9, "float64"), ("free", 0.0, "float64"), ("resync", 0.5, "float32"),
])
def test_the_c_client_passes(tmp_path, c_client, mode, momentum, dtype):
    result = check(spec(tmp_path, momentum, dtype), f"exec:{c_client['mlp']}", mode=mode)
    assert result.ok and result.steps_checked == 12
    expected = {"output", "loss", "delta", "grad", "param"} | ({"optim"} if momentum else set())
    assert expected <= set(result.stats) and result.not_reported == []


@pytest.mark.parametrize("mode", ["free", "resync"])
def test_the_c_clients_planted_bug_is_caught_where_it_is(tmp_path, c_client, mode):
    """The last bias forgets its momentum: the first step (buffer = gradient) is right, the second not."""
    m = check(spec(tmp_path), f"exec:{c_client['mlp_bug']}", mode=mode).first_mismatch
    assert (m.iteration, m.stage, m.name) == (1, "optim", "layers.2.bias.momentum_buffer")


def test_the_c_client_from_the_command(tmp_path, capsys, c_client):
    assert cli.main(["run", spec(tmp_path), "--impl", f"exec:{c_client['mlp_bug']}"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and "layers.2.bias.momentum_buffer" in out


def test_the_c_client_refuses_what_it_does_not_have(tmp_path, c_client):
    """An "error" answer to init: the implementation failed at iteration 0, naming what it lacks."""
    f = Path(spec(tmp_path)).read_text().replace('loss = "mse"', 'loss = "half-sse"')
    (tmp_path / "half.toml").write_text(f)
    m = check(str(tmp_path / "half.toml"), f"exec:{c_client['mlp']}").first_mismatch
    assert (m.iteration, m.stage) == (0, "exception")
    assert "answered init with an error: network.loss: this client has mse (mean) only" in m.detail


PYTHON_CLIENT = f"exec:{shlex.quote(sys.executable)} -m torch_ref.implementation.client"


PLUGIN = """
import manual.trainer

class Bad:
    \"\"\"The manual engine, with layers.1.weight's gradient doubled from iteration 3 on.\"\"\"
    def __init__(self, desc):
        self.inner, self.it = manual.trainer.build(desc), 0
    def load_state_dict(self, state):
        self.inner.load_state_dict(state)
    def train_step(self, x, y):
        r = self.inner.train_step(x, y)
        if self.it >= 3:
            r["grads"]["layers.1.weight"] = 2 * r["grads"]["layers.1.weight"]
        self.it += 1
        return r
"""


@pytest.mark.parametrize("factory,where", [
    ("manual.trainer:build", None),
    ("PLUGIN:Bad", (3, "grad", "layers.1.weight")),
])
def test_the_python_client_serves_a_plugin_in_its_own_process(tmp_path, factory, where):
    """The same verdict as the plug-in in-process: a pass, or the mismatch at the same place."""
    (tmp_path / "plugin.py").write_text(PLUGIN)
    target = factory.replace("PLUGIN", str(tmp_path / "plugin.py"))
    desc = str(SPECS / "worked_example.toml")
    result = check(desc, f"{PYTHON_CLIENT} {shlex.quote(target)}", steps=20)
    in_process = check(desc, target, steps=20)
    for r in (result, in_process):
        m = r.first_mismatch
        assert r.ok if where is None else (m.iteration, m.stage, m.name) == where


def test_the_wire_format_round_trips_every_dtype_and_shape():
    arrays = [("a", np.arange(6.0).reshape(2, 3)), ("b", np.float32(0.5) * np.ones((0, 4), np.float32)),
              ("c", np.array(7, np.int64)), ("d", np.array([True, False])), ("e", np.array(0.35))]
    header, got = wire.read_message(io.BytesIO(wire.encode("step", arrays, iteration=3)))
    assert header["message"] == "step" and header["iteration"] == 3
    for name, a in arrays:
        assert got[name].dtype == a.dtype and got[name].shape == a.shape and np.array_equal(got[name], a)


def test_the_docs_c_example_runs_as_shown(c_client, tmp_path, monkeypatch, capsys):
    """docs/protocol.md's `backprop-check run clients/momentum.toml --impl "exec:./mlp"`."""
    shutil.copy(c_client["mlp"], tmp_path / "mlp")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(MOMENTUM), "--impl", "exec:./mlp"]) == 0
    assert capsys.readouterr().out.startswith("PASS: 12 iteration(s)")


def protocol_blocks():
    import re
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8"), re.S)


def test_the_protocol_pages_hand_built_message_is_the_harnesss():
    exec(compile(protocol_blocks()[0], "docs/protocol.md", "exec"), {})


def test_the_protocol_pages_client_by_hand_passes(tmp_path):
    """The page's numpy-only client, saved as client.py, run as its own program (and the in-process
    equivalent: a command shown as `exec:python3 ...` runs with this interpreter)."""
    (tmp_path / "client.py").write_text(protocol_blocks()[1])
    result = check("worked_example", f"exec:{shlex.quote(sys.executable)} {tmp_path / 'client.py'}", steps=50)
    assert result.ok and result.steps_checked == 50


def test_the_python_client_command_of_the_docs_passes():
    """docs/protocol.md's `--impl "exec:python3 -m torch_ref.implementation.client manual.trainer:build"`."""
    result = check("worked_example", f"{PYTHON_CLIENT} manual.trainer:build", steps=30)
    assert result.ok and result.steps_checked == 30
