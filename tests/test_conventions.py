"""Conventions users expect: --version, `python -m torch_ref`, bundled descriptions found by name
(`run worked_example`, `specs`, the Python API), the pytest plugin's fixture `lockstep_check`, and
the packages `python -m build` makes (slow: building, and a non-editable install run from another
directory).
"""
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import torch_ref
from torch_ref.cli import main as cli
from torch_ref.description import spec, files as specfile

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "torch_ref" / "specs"
PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# A user's network and a numpy implementation of it with one planted mistake: the output layer's
# weight gradient doubled. The lockstep must stop at iteration 0, stage grad, on that tensor.
MY_NET_TOML = """
[network]
sizes = [3, 4, 2]
activation = ["tanh", "identity"]
bias = "per-neuron"
loss = "mse"
[init]
seed = 0
[optimizer]
name = "sgd"
lr = 0.1
[data]
random = { n = 12, seed = 1 }
batch_size = 4
[run]
steps = 5
"""
BUGGY_NET = '''
import numpy as np


class TwiceTheOutputGradient:
    """tanh hidden layer, linear output, mean squared error, SGD; one wrong gradient."""

    def __init__(self, desc):
        self.lr = desc["optimizer"]["lr"]

    def load_state_dict(self, state):
        self.p = {k: np.array(v, dtype=np.float64) for k, v in state.items()}

    def train_step(self, x, y):
        W1, b1, W2, b2 = (self.p[k] for k in ("layers.0.weight", "layers.0.bias",
                                              "layers.1.weight", "layers.1.bias"))
        h = np.tanh(x @ W1.T + b1)
        out = h @ W2.T + b2
        delta2 = 2.0 * (out - y) / out.size
        delta1 = (delta2 @ W2) * (1.0 - h ** 2)
        grads = {"layers.0.weight": delta1.T @ x, "layers.0.bias": delta1.sum(0),
                 "layers.1.weight": 2.0 * (delta2.T @ h),  # the planted mistake
                 "layers.1.bias": delta2.sum(0)}
        self.p = {k: v - self.lr * grads[k] for k, v in self.p.items()}
        return {"output": out, "loss": float(np.mean((out - y) ** 2)), "grads": grads, "state_dict": self.p}
'''
PLANTED = "lockstep mismatch at iteration 0, stage 'grad', tensor 'layers.1.weight'"


def _bundled_files():
    """{name: first comment line} of torch_ref/specs/*.toml, read here without spec.py."""
    out = {}
    for path in sorted(SPECS.glob("*.toml")):
        comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
        out[path.stem] = comments[0].lstrip("#").strip() if comments else ""
    return out


# ---- --version, python -m torch_ref ------------------------------------------------------------

def test_version_flag_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"backprop-check {metadata.version('backprop-check')}\n"


def test_version_fallback_agrees_with_pyproject(monkeypatch, capsys):
    """__version__ is what --version prints from an uninstalled tree; it must follow pyproject."""
    assert torch_ref.__version__ == PYPROJECT_VERSION
    assert metadata.version("backprop-check") == PYPROJECT_VERSION  # else: reinstall (scripts/setup.sh)

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", not_installed)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out == f"backprop-check {PYPROJECT_VERSION}\n"


@pytest.mark.parametrize("argv, code", [
    (["--version"], 0),
    (["run", "worked_example", "--steps", "2", "--quiet"], 0),
    (["run", "my_net.toml", "--impl", "buggy_net.py:TwiceTheOutputGradient", "--quiet"], 1),
    (["run", "no_such_description"], 2),
    (["frobnicate"], 2),
])
def test_python_dash_m_torch_ref_is_the_command(argv, code, tmp_path, monkeypatch, capsys):
    """torch_ref/__main__.py run as `python -m` runs it (runpy itself cannot: under pytest the
    package is loaded by the assertion rewriter, which runpy does not know)."""
    (tmp_path / "my_net.toml").write_text(MY_NET_TOML)
    (tmp_path / "buggy_net.py").write_text(BUGGY_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m torch_ref", *argv])
    main_py = ROOT / "torch_ref" / "__main__.py"
    with pytest.raises(SystemExit) as e:
        exec(compile(main_py.read_text(), str(main_py), "exec"), {"__name__": "__main__", "__package__": "torch_ref"})
    assert e.value.code == code
    out, err = capsys.readouterr()
    if code == 1:
        assert PLANTED in out
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, code", [(["--version"], 0), (["frobnicate"], 2)])
def test_python_dash_m_torch_ref_exit_status(argv, code, tmp_path):
    """The interpreter's own exit status (a real process; neither case imports torch)."""
    proc = subprocess.run([sys.executable, "-m", "torch_ref", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == code, proc.stderr
    assert (proc.stdout if code == 0 else proc.stderr).startswith("backprop-check")


# ---- bundled descriptions by name --------------------------------------------------------------

def test_a_name_runs_as_its_path_does(tmp_path, monkeypatch, capsys):
    """From a directory that has no such file, `run worked_example` is `run <path>/worked_example.toml`,
    and so is `run worked_example.toml`."""
    monkeypatch.chdir(tmp_path)
    outputs = []
    for spec_arg in (str(SPECS / "worked_example.toml"), "worked_example", "worked_example.toml"):
        assert cli.main(["run", spec_arg, "--steps", "3", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0]["steps_checked"] == 3
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("this is [not TOML"), "is not valid TOML"),
    (lambda p: p.mkdir(), "cannot read 'worked_example'"),  # then the system's words (Is a directory)
])
def test_a_path_that_exists_wins_over_a_name(make, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make(tmp_path / "worked_example")
    assert cli.main(["run", "worked_example", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backprop-check: error: SPEC: ") and message in err and "bundled" not in err


@pytest.mark.parametrize("given", ["no_such_description", "worked_example.json", "specs/worked_example.toml"])
def test_neither_a_file_nor_a_name_is_refused_listing_the_names(given, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", given]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("backprop-check: error: SPEC: ")
    assert repr(given) in err
    for name in _bundled_files():
        assert name in err


def test_the_python_api_takes_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_name = torch_ref.check("four_layer_mixed", steps=3)
    by_path = torch_ref.check(SPECS / "four_layer_mixed.toml", steps=3)
    assert by_name.ok and by_name.to_json() == by_path.to_json()
    with pytest.raises(spec.SpecError, match="SPEC: .*bundled: .*worked_example"):
        torch_ref.assert_lockstep("nonexistent_net", steps=1)


@pytest.mark.parametrize("as_json", [False, True])
def test_specs_lists_every_bundled_description_with_its_first_comment(as_json, capsys):
    assert cli.main(["specs", "--json"] if as_json else ["specs"]) == 0
    out = capsys.readouterr().out
    expected = _bundled_files()
    assert len(expected) >= 6
    if as_json:
        listed = {e["name"]: e["summary"] for e in json.loads(out)["specs"]}
    else:
        listed = dict(line.split(None, 1) for line in out.splitlines())
    assert listed == expected


@pytest.mark.parametrize("text, first", [
    ("# one\n# two\n[network]\n", "one"),
    ("\n   #   indented  \n", "indented"),
    ("[network]\nsizes = [2, 2]  # not a comment line\n# late\n", "late"),
    ('{"network": {}}', ""),
])
def test_first_comment(text, first):
    assert specfile.first_comment(text) == first


# ---- the pytest plugin -------------------------------------------------------------------------

def test_the_plugin_is_registered_once_by_its_entry_point(pytestconfig):
    import torch_ref.pytest_plugin as plugin
    points = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "torch_ref.pytest_plugin"]
    assert [ep.name for ep in points] == ["backprop_check"]
    assert pytestconfig.pluginmanager.get_plugin("backprop_check") is plugin
    assert "torch_ref.pytest_plugin" not in (ROOT / "tests" / "conftest.py").read_text()


USER_TESTS = '''
from buggy_net import TwiceTheOutputGradient


def test_the_manual_engine_is_certified(lockstep_check):
    result = lockstep_check("worked_example", "manual.trainer:build", steps=20)
    assert result.steps_checked == 20


def test_a_wrong_gradient_fails(lockstep_check):
    lockstep_check("my_net.toml", TwiceTheOutputGradient)
'''


def test_the_fixture_in_a_users_own_tests(pytester):
    """A user's test file, with nothing but the fixture: the manual engine passes, a wrong gradient
    fails with the report (once) naming iteration, stage and tensor, and no traceback."""
    # What the inner run imports first, pytester drops from sys.modules after it (torch._dynamo,
    # imported by torch.optim's first optimizer, among them): import it here, in a run of our own.
    torch_ref.check("worked_example", steps=1)
    pytester.makefile(".toml", my_net=MY_NET_TOML)
    pytester.makepyfile(buggy_net=BUGGY_NET, test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_a_wrong_gradient_fails*", f"*{PLANTED}*", "*worst element at index*"])
    shown = result.stdout.str()
    # the failure's own section shows the report once (the short summary at the end may repeat its
    # first line: pytest does not truncate it where CI is set)
    failure = shown[shown.index("FAILURES"):shown.rindex("short test summary")]
    assert failure.count(PLANTED) == 1 and "Traceback" not in shown and "torch_ref/api.py" not in shown


# ---- packaging (slow) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """`python -m build` of this tree: (sdist, wheel, the build's output)."""
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # its warning is the shell's
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return sdist, wheel, proc.stdout + proc.stderr


@pytest.mark.slow
def test_build_makes_a_wheel_and_an_sdist_without_warnings(dists):
    sdist, wheel, log = dists
    warnings = [line for line in log.splitlines() if "warn" in line.lower() or line.strip() == "!!"]
    assert warnings == []
    in_wheel = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in in_wheel} == {"manual", "torch_ref", f"backprop_check-{PYPROJECT_VERSION}.dist-info"}
    sources = {p.relative_to(ROOT).as_posix() for top in ("manual", "torch_ref") for p in (ROOT / top).rglob("*.py")}
    assert {n for n in in_wheel if n.endswith(".py")} == sources  # every module of every subpackage
    assert f"backprop_check-{PYPROJECT_VERSION}.dist-info/licenses/LICENSE" in in_wheel
    assert {n for n in in_wheel if n.startswith("torch_ref/specs/")} == {
        f"torch_ref/specs/{p.name}" for p in SPECS.glob("*.toml")}
    assert {n for n in in_wheel if n.startswith("manual/texts/")} == {  # the "chars" set's text
        f"manual/texts/{p.name}" for p in (ROOT / "manual" / "texts").glob("*.txt")} != set()
    assert "torch_ref/html/template.html" in in_wheel  # the --html page's template (package data)
    points = zipfile.ZipFile(wheel).read(f"backprop_check-{PYPROJECT_VERSION}.dist-info/entry_points.txt").decode()
    assert "[pytest11]" in points and "backprop_check = torch_ref.pytest_plugin" in points
    top = f"backprop_check-{PYPROJECT_VERSION}/"
    in_sdist = {n[len(top):] for n in tarfile.open(sdist).getnames()}
    for name in ("README.md", "LICENSE", "pyproject.toml", "tests/conftest.py", "tests/test_conventions.py",
                 "scripts/seed_port.py", "docs/verdicts.md", "torch_ref/specs/worked_example.toml"):
        assert name in in_sdist
    assert not [n for n in in_sdist if n.endswith(".pyc")]


@pytest.mark.slow
def test_the_installed_wheel_works_from_another_directory(dists, tmp_path):
    """pip install --no-deps --target (non-editable; torch and numpy from this environment), then
    every command the README shows, run where no source tree is."""
    _, wheel, _ = dists
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*argv):
        proc = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.stdout

    assert run(sys.executable, "-c", "import torch_ref; print(torch_ref.__file__)").startswith(str(site))
    command = str(site / "bin" / "backprop-check")
    assert run(command, "--version") == f"backprop-check {PYPROJECT_VERSION}\n"
    assert "worked_example" in run(command, "specs")
    assert "PASS: 5 iteration(s)" in run(command, "run", "worked_example", "--steps", "5")
    assert "PASS: 2 iteration(s)" in run(command, "run", "worked_example_batch6", "--ranks", "2", "--steps", "2")
    assert json.loads(run(sys.executable, "-m", "torch_ref", "example", "--json"))["confirmed_by_autograd"] is True
    (elsewhere / "test_mine.py").write_text(
        "def test_it(lockstep_check):\n    lockstep_check('worked_example', 'manual.trainer:build', steps=5)\n")
    assert "1 passed" in run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_mine.py")
