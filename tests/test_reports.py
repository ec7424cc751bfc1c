"""Reports a CI can keep: --report JSON, --markdown, --plot PNG; atomic writes; unwritable paths
refused before the run; progress only on a terminal."""
import io
import json
import os
import struct

import numpy as np
import pytest
import torch

import manual.data
import manual.init
import manual.trainer
from torch_ref.cli import main as cli
from torch_ref import reports
from torch_ref.description import spec
from torch_ref.lockstep import run as lockstep_module
from torch_ref.lockstep.run import lockstep
from torch_ref.lockstep.verdict import STAGES
from torch_ref.twin.model import Twin

from conftest import SPECS

WORKED = str(SPECS / "worked_example.toml")
STEPS = 6


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One passing and one failing run, each with all three reports."""
    d = tmp_path_factory.mktemp("reports")
    out = {}
    for kind, extra in (("pass", []), ("fail", ["--impl", "torch_ref.zoo.mistakes:GradsNotZeroed"])):
        paths = {"json": d / f"{kind}.json", "md": d / f"{kind}.md", "png": d / f"{kind}.png"}
        code = cli.main(["run", WORKED, "--steps", str(STEPS), "--report", str(paths["json"]),
                         "--markdown", str(paths["md"]), "--plot", str(paths["png"]), *extra])
        out[kind] = (code, paths, json.loads(paths["json"].read_text()))
    return out


def independent_losses(steps):
    """Both sides' losses per iteration, by driving the manual trainer and the twin directly."""
    desc = spec.load(WORKED)
    state = manual.init.initial_state(desc)
    m, t = manual.trainer.build(desc), Twin(desc, state)
    m.load_state_dict(state)
    batches = manual.data.batches(desc)
    out = []
    for _ in range(steps):
        x, y = next(batches)
        out.append((m.train_step(x, y)["loss"], t.train_step(x, y)["loss"]))
    return np.array(out)


def test_json_report_of_a_passing_run(written):
    code, _, rep = written["pass"]
    assert code == 0
    assert rep["verdict"] == "PASS" and rep["ok"] is True and rep["first_mismatch"] is None
    assert rep["steps_checked"] == rep["per_iteration"]["iterations"] == STEPS
    desc = spec.load(WORKED)
    desc["run"]["steps"] = STEPS
    assert rep["description"] == json.loads(json.dumps(desc))
    losses = independent_losses(STEPS)
    assert rep["per_iteration"]["loss"]["manual"] == pytest.approx(losses[:, 0], rel=1e-14)
    assert rep["per_iteration"]["loss"]["reference"] == pytest.approx(losses[:, 1], rel=1e-14)
    assert rep["per_iteration"]["loss"]["manual"][1] < rep["per_iteration"]["loss"]["manual"][0]
    stages = rep["per_iteration"]["stages"]
    assert set(stages) == set(rep["summary"]) and set(stages) <= set(STAGES)
    for stage, s in stages.items():
        assert len(s["max_abs_err"]) == len(s["max_rel_err"]) == len(s["worst_tensor"]) == STEPS
        assert all(0 <= v <= 1e-12 for v in s["max_rel_err"])
        # the run's summary is the largest of the per-iteration figures, and names the same tensor
        summary = rep["summary"][stage]
        assert max(s["max_rel_err"]) == pytest.approx(summary["max_rel_err"], rel=1e-3, abs=1e-300)
        if summary["max_rel_err"] > 0:
            worst_it = int(np.argmax(s["max_rel_err"]))
            assert s["tensors"][s["worst_tensor"][worst_it]] == summary["worst_tensor"]


def test_json_report_environment(written):
    env = written["pass"][2]["environment"]
    assert env["numpy"] == np.__version__ and env["torch"] == torch.__version__
    assert env["python"].count(".") == 2 and env["dtype"] == "float64" and env["device"] == "cpu"
    assert env["device_name"]
    assert env["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert env["tf32"]["cuda.matmul.allow_tf32"] == torch.backends.cuda.matmul.allow_tf32
    assert set(env["seeds"]) >= {"init", "data"}


def test_json_report_of_a_failing_run(written):
    code, _, rep = written["fail"]
    assert code == 1 and rep["verdict"] == "FAIL"
    m = rep["first_mismatch"]
    assert (m["iteration"], m["stage"], m["name"]) == (1, "grad", "layers.1.weight")
    assert "iteration 1, stage 'grad', tensor 'layers.1.weight'" in rep["first_mismatch_text"]
    per = rep["per_iteration"]
    assert per["iterations"] == 2  # the clean iteration 0 and the failing one
    grad = per["stages"]["grad"]
    assert grad["max_rel_err"][0] <= 1e-12 and grad["max_rel_err"][1] >= m["rel_err"] * (1 - 1e-3)
    assert grad["tensors"][grad["worst_tensor"][1]] == "layers.1.weight"
    assert per["stages"]["param"]["max_rel_err"][1] is None  # never compared: the run stopped first


def test_markdown(written):
    text = written["pass"][1]["md"].read_text()
    assert text.startswith("### backprop-check: ✅ PASS")
    assert f"{STEPS} of {STEPS} iteration(s) of `{WORKED}` matched, in lockstep" in text
    for stage in written["pass"][2]["summary"]:
        assert f"| {stage} | " in text
    assert f"| torch | {torch.__version__} |" in text
    fail = written["fail"][1]["md"].read_text()
    assert fail.startswith("### backprop-check: ❌ FAIL")
    assert f"1 of {STEPS} iteration(s) of `{WORKED}` matched, then a mismatch at iteration 1" in fail
    assert "**First mismatch: iteration 1, stage `grad`, tensor `layers.1.weight`**" in fail
    assert "lockstep mismatch at iteration 1" in fail


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24]), len(data)


@pytest.mark.parametrize("kind", ["pass", "fail"])
def test_plot_is_a_valid_nontrivial_png(written, kind):
    import matplotlib.image
    path = written[kind][1]["png"]
    (w, h), size = png_size(path)
    assert w >= 400 and h >= 400 and size > 10_000
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (h, w)
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, axes and curves, not a blank canvas
    assert not any(n.endswith(".tmp") for n in os.listdir(path.parent))  # no temporary file left


@pytest.mark.parametrize("flag", ["--report", "--markdown", "--plot"])
@pytest.mark.parametrize("case", ["missing directory", "parent is a file", "is a directory"])
def test_unwritable_path_exits_2_before_the_run(tmp_path, monkeypatch, capsys, flag, case):
    def must_not_run(*a, **k):
        raise AssertionError("the run started")
    monkeypatch.setattr(lockstep_module, "lockstep", must_not_run)
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    target = {"missing directory": tmp_path / "nope" / "r.out", "parent is a file": tmp_path / "afile" / "r.out",
              "is a directory": tmp_path / "adir"}[case]
    assert cli.main(["run", WORKED, "--steps", "2", flag, str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"backprop-check: error: {flag}: cannot write")
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_exits_2(tmp_path, capsys):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        assert cli.main(["run", WORKED, "--steps", "2", "--report", str(d / "r.json")]) == 2
    finally:
        d.chmod(0o700)
    assert "cannot write" in capsys.readouterr().err


def test_same_file_for_two_reports_is_refused(tmp_path, capsys):
    f = str(tmp_path / "r")
    assert cli.main(["run", WORKED, "--steps", "2", "--report", f, "--markdown", f]) == 2
    assert "different files" in capsys.readouterr().err


def test_interrupted_write_keeps_the_old_file_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text('{"old": true}')

    def crashes_midway(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reports.write_atomic(target, crashes_midway)
    assert target.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["report.json"]  # the temporary file is gone
    reports.write_atomic(target, lambda f: f.write(b'{"new": 1}'))
    assert json.loads(target.read_text()) == {"new": 1}
    assert os.listdir(tmp_path) == ["report.json"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal_and_never_when_quiet(capsys):
    assert reports.for_terminal(False, io.StringIO()) is None  # not a terminal
    assert reports.for_terminal(True, FakeTerminal()) is None  # --quiet
    tty = FakeTerminal()
    p = reports.for_terminal(False, tty)
    result = lockstep(spec.load(WORKED) | {"run": {"steps": 3, "dtype": "float64", "device": "cpu"}}, progress=p)
    p.done()
    assert result.ok
    assert "lockstep: iteration 1/3" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")
    assert cli.main(["run", WORKED, "--steps", "3"]) == 0
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal


def test_history_only_when_asked():
    desc = spec.load(WORKED)
    desc["run"]["steps"] = 3
    assert lockstep(desc).history is None
    h = lockstep(desc, record=True).history
    assert h.loss.shape == (3, 2) and h.abs.shape == h.rel.shape == (3, len(h.keys))
    assert not np.isnan(h.rel).any()
    with pytest.raises(ValueError, match="record=True"):
        reports.build(lockstep(desc), desc)


class Raises:
    """An implementation whose own code fails at its first step: the reports still say so."""

    def load_state_dict(self, state):
        pass

    def train_step(self, x, y):
        raise ZeroDivisionError("division by zero in my backward")


def test_reports_of_a_run_that_raised(tmp_path):
    desc = spec.load(WORKED)
    desc["run"]["steps"] = 3
    result = lockstep(desc, impl=Raises(), record=True)
    assert not result.ok and result.first_mismatch.stage == "exception"
    reports.write_json(tmp_path / "r.json", result, desc)
    reports.write_markdown(tmp_path / "r.md", result, desc)
    reports.write_plot(tmp_path / "r.png", result, desc)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verdict"] == "FAIL" and rep["per_iteration"]["stages"] == {}
    assert rep["per_iteration"]["loss"]["manual"] == [None]
    assert "division by zero in my backward" in (tmp_path / "r.md").read_text()
    png_size(tmp_path / "r.png")


def test_reports_from_python(tmp_path):
    import torch_ref
    paths = {"report": tmp_path / "r.json", "markdown": tmp_path / "r.md", "plot": tmp_path / "r.png"}
    result = torch_ref.check(WORKED, steps=4, **{k: str(v) for k, v in paths.items()})
    assert result.ok and result.history is not None
    assert json.loads(paths["report"].read_text())["per_iteration"]["iterations"] == 4
    assert paths["markdown"].read_text().startswith("### backprop-check: ✅ PASS")
    png_size(paths["plot"])
    with pytest.raises(spec.SpecError, match="--report: cannot write"):
        torch_ref.check(WORKED, steps=4, report=str(tmp_path / "missing" / "r.json"))
    assert torch_ref.check(WORKED, steps=2).history is None  # nothing recorded when no report is asked for


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")
def test_report_environment_on_cuda(tmp_path):
    path = tmp_path / "r.json"
    assert cli.main(["run", str(SPECS / "four_layer_mixed.toml"), "--device", "cuda", "--dtype", "float32",
                     "--mode", "resync", "--steps", "20", "--report", str(path)]) == 0
    env = json.loads(path.read_text())["environment"]
    assert env["device"] == "cuda" and env["device_name"] == torch.cuda.get_device_name()
    assert env["dtype"] == "float32"
    assert env["tf32"]["cuda.matmul.allow_tf32"] is False and env["tf32"]["cudnn.allow_tf32"] is False


def test_reports_of_a_layer_list(tmp_path):
    """A layer list's reports: the Markdown names its modules, the JSON has its new stages."""
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    assert cli.main(["run", "residual", "--steps", "2", "--quiet", "--markdown", str(md), "--report", str(js)]) == 0
    assert "Network: input [3, 10], layers Conv1d, Residual[Conv1d, GELU, Conv1d], LayerNorm, Flatten, Linear," \
        in md.read_text()
    assert {"forward", "delta", "grad"} <= set(json.loads(js.read_text())["summary"])
