"""Reports are reproducible (the same description gives the same report, byte for byte, whatever
the process), and an optional dependency that is missing is a usage error found before the run."""
import os
import subprocess
import sys

import pytest

import torch_ref
import torch_ref.lockstep.run
from torch_ref.cli import main as cli
from torch_ref.description.spec import SpecError

from conftest import SPECS

WORKED = str(SPECS / "worked_example.toml")
ROOT = SPECS.parent.parent


def test_the_same_description_gives_the_same_report_in_another_process(tmp_path):
    """This process and another one (another hash seed, another torch per-process random seed):
    the JSON and Markdown reports are identical, byte for byte. (Reports hold no timing; see
    torch_ref/reports.py.)"""
    paths = {}
    for where in ("here", "there"):
        (tmp_path / where).mkdir()
        paths[where] = ["run", WORKED, "--steps", "4", "--quiet",
                        "--report", str(tmp_path / where / "r.json"), "--markdown", str(tmp_path / where / "r.md")]
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    p = subprocess.run([sys.executable, "-m", "torch_ref.cli.main", *paths["there"]], cwd=ROOT, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    assert cli.main(paths["here"]) == 0
    for name in ("r.json", "r.md"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes(), name


def test_plot_without_matplotlib_is_a_usage_error_before_the_run(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    ran = []
    monkeypatch.setattr(torch_ref.lockstep.run, "lockstep", lambda *a, **k: ran.append(1))
    assert cli.main(["run", WORKED, "--plot", str(tmp_path / "p.png")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("backprop-check: error: --plot: ") and "pip install 'backprop-check[plot]'" in err
    assert ran == [] and not (tmp_path / "p.png").exists()
    with pytest.raises(SpecError, match=r"backprop-check\[plot\]"):
        torch_ref.check(WORKED, plot=str(tmp_path / "p.png"))


def test_the_exit_codes_are_documented(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("0 every check passed", "1 a mismatch, or the implementation failed",
                  "2 usage, bad input, or the environment", "130/143 interrupted"):
        assert words in " ".join(text.split()), words
    doc = " ".join(cli.__doc__.split())
    for words in ("0 every check passed", "1 a mismatch, or the implementation failed",
                  "2 usage, bad input or the environment", "130 interrupted by SIGINT", "143 by SIGTERM"):
        assert words in doc, words
