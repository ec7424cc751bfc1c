"""Trace files (torch_ref/traces/, docs/traces.md): `export`, an outside program writes results,
`verify` replays the twin against them; full and partial traces, a planted bug in the writer, bad
files and bad directories, each with its one line and exit code."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual.trainer
from torch_ref.cli import main as cli
from torch_ref.traces import export as export_module

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "clients" / "momentum.toml")  # 12 iterations, batches of 5, 5, 2, ...; SGD with momentum


def _writer():
    s = importlib.util.spec_from_file_location("trace_mlp", ROOT / "clients" / "trace_mlp.py")
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module


WRITER = _writer()


@pytest.fixture
def exported(tmp_path, capsys):
    folder = tmp_path / "trace"
    assert cli.main(["export", SPEC, str(folder)]) == 0
    capsys.readouterr()
    return folder


def verify(folder, capsys, *flags):
    code = cli.main(["verify", SPEC, str(folder), "--quiet", "--no-attribution", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_full_trace_written_by_an_outside_program_passes(exported, capsys):
    subprocess.run([sys.executable, str(ROOT / "clients" / "trace_mlp.py"), str(exported)], check=True, cwd=ROOT)
    code, out, _ = verify(exported, capsys, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["ok"]
    assert rep["checked"] == {"iterations": list(range(12)), "of": 12,
                              "stages": ["output", "loss", "delta", "grad", "optim", "param"]}
    assert rep["not_reported"] == []


@pytest.mark.parametrize("args, iterations, stages, not_reported", [
    (["--every", "5"], [0, 5, 10], "output, loss, delta, grad, optim, param", []),
    (["--required-only"], list(range(12)), "output, loss, grad, param", ["delta", "optim"]),
    (["--every", "4", "--required-only"], [0, 4, 8], "output, loss, grad, param", ["delta", "optim"]),
])
def test_a_partial_trace_passes_and_says_what_was_checked(exported, capsys, args, iterations, stages, not_reported):
    assert WRITER.main([str(exported), *args]) == 0
    code, out, _ = verify(exported, capsys)
    assert code == 0, out
    shown = ", ".join(map(str, iterations)) if len(iterations) <= 6 else "0, 1, 2, ..., 11"
    assert f"checked: iterations {shown} ({len(iterations)} of 12); stages {stages}" in out
    for stage in not_reported:
        assert f"{stage}   not reported" in out


@pytest.mark.parametrize("args, iteration", [([], 1), (["--every", "5"], 5), (["--every", "5", "--required-only"], 5)])
def test_a_planted_bug_in_the_writer_fails_at_its_iteration_stage_and_tensor(exported, capsys, args, iteration):
    assert WRITER.main([str(exported), "--planted-bug", *args]) == 0
    code, out, _ = verify(exported, capsys, "--json")
    first = json.loads(out)["first_mismatch"]
    assert code == 1 and (first["iteration"], first["stage"], first["name"]) == (iteration, "loss", "loss")
    assert json.loads(out)["checked"]["iterations"][-1] == iteration


def test_a_partial_trace_is_judged_on_the_whole_trajectory(exported, capsys):
    """A step gone wrong at an iteration without a file shows at the next iteration with one."""
    manifest = json.loads((exported / "manifest.json").read_text())
    engine = manual.trainer.build(json.loads((exported / "description.json").read_text()))
    engine.load_state_dict({n: np.load(exported / t["file"]) for n, t in manifest["initial_state"].items()})
    for batch in manifest["batches"]:
        it = batch["iteration"]
        result = engine.train_step(np.load(exported / batch["x"]), np.load(exported / batch["y"]))
        if it == 2:  # unwritten: its update goes wrong, the trajectory parts from the twin's
            engine.load_state_dict({k: v * 1.01 for k, v in result["state_dict"].items()})
        if it % 5 == 0:
            WRITER.write(exported, it, result, np.float64)
    code, out, _ = verify(exported, capsys, "--json")
    first = json.loads(out)["first_mismatch"]
    assert code == 1 and (first["iteration"], first["stage"]) == (5, "output")


def _rewrite(folder, it, change):
    path = folder / "results" / f"{it:06d}.npz"
    with np.load(path) as held:
        arrays = {k: held[k] for k in held.files}
    change(arrays)
    np.savez(path, **arrays)


BAD = [  # (what is done to the trace, the file named, the key named, words of the message)
    (lambda f: _rewrite(f, 3, lambda a: a.update({"grads/layers.9.weight": np.zeros(2)})),
     "000003.npz", "grads/layers.9.weight", "not a result of this network"),
    (lambda f: _rewrite(f, 0, lambda a: a.update(output=a["output"].astype(np.float32))),
     "000000.npz", "output", "dtype float32; expected float64"),
    (lambda f: _rewrite(f, 2, lambda a: a.update({"grads/layers.0.weight": a["grads/layers.0.weight"].T})),
     "000002.npz", "grads/layers.0.weight", "shape [3, 5]; expected [5, 3]"),
    (lambda f: _rewrite(f, 4, lambda a: a.pop("loss")), "000004.npz", "loss", "is missing"),
    (lambda f: _rewrite(f, 1, lambda a: a.pop("deltas/layers.0")), "000001.npz", "deltas/layers.0",
     "missing here and given in 000000.npz"),
    (lambda f: _rewrite(f, 0, lambda a: a.pop("optimizer_state/layers.1.bias.momentum_buffer")), "000000.npz",
     "optimizer_state/layers.1.bias.momentum_buffer", "is missing"),
    (lambda f: (f / "results" / "000005.npz").write_bytes(b"not a zip"), "000005.npz", "", "not a readable .npz"),
    (lambda f: (f / "results" / "000012.npz").write_bytes(b""), "000012.npz", "", "not a results file"),
    (lambda f: (f / "results" / "notes.txt").write_text("x"), "notes.txt", "", "not a results file"),
    (lambda f: (f / "manifest.json").unlink(), "manifest.json", "", "not an export"),
]


@pytest.mark.parametrize("damage, file, key, words", BAD)
def test_a_bad_trace_file_is_one_line_naming_the_file_and_key(exported, capsys, damage, file, key, words):
    WRITER.main([str(exported)])
    damage(exported)
    code, out, err = verify(exported, capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert file in err and (f"'{key}'" in err if key else True) and words in err


def test_verify_refuses_an_export_of_another_description(exported, capsys, tmp_path):
    WRITER.main([str(exported)])
    other = tmp_path / "other.toml"
    other.write_text(Path(SPEC).read_text().replace("lr = 0.1", "lr = 0.2"))
    code = cli.main(["verify", str(other), str(exported), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "description.json" in err and "[optimizer]" in err


def _not_an_export(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep me")
    return tmp_path / "d", "not an earlier export"


def _a_file(tmp_path):
    (tmp_path / "f").write_text("keep me")
    return tmp_path / "f", "not a directory"


@pytest.mark.parametrize("make", [_not_an_export, _a_file])
def test_export_refuses_a_directory_that_is_not_an_earlier_export(tmp_path, capsys, make):
    folder, words = make(tmp_path)
    code = cli.main(["export", SPEC, str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err and str(folder) in err
    kept = folder / "mine.txt" if folder.is_dir() else folder
    assert kept.read_text() == "keep me" and sorted(p.name for p in kept.parent.iterdir()) == [kept.name]


def test_an_interrupted_export_leaves_no_manifest_and_a_new_one_replaces_it(exported, capsys, monkeypatch):
    WRITER.main([str(exported)])
    calls = []

    def interrupted(folder, relative, value):
        calls.append(relative)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return saved(folder, relative, value)

    saved = export_module._save
    monkeypatch.setattr(export_module, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["export", SPEC, str(exported)])
    assert not (exported / "manifest.json").exists()
    assert verify(exported, capsys)[0] == 2
    monkeypatch.setattr(export_module, "_save", saved)
    assert cli.main(["export", SPEC, str(exported)]) == 0  # an earlier export (interrupted or not): replaced
    assert verify(exported, capsys)[0] == 0  # its results/ kept


def test_the_reports_say_what_a_trace_checked(exported, capsys, tmp_path):
    WRITER.main([str(exported), "--every", "5"])
    code, _, _ = verify(exported, capsys, "--markdown", str(tmp_path / "r.md"), "--report", str(tmp_path / "r.json"))
    assert code == 0
    assert "checked: iterations 0, 5, 10 (3 of 12)" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["checked"]["iterations"] == [0, 5, 10]


def test_the_export_holds_what_the_manifest_names(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["layout"] == 1 and manifest["steps"] == 12 and len(manifest["batches"]) == 12
    assert [b["samples"] for b in manifest["batches"][:3]] == [5, 5, 2]
    for batch in manifest["batches"]:
        assert np.load(exported / batch["x"]).shape == (batch["samples"], 3)
    assert manifest["results"]["required"]["output"] == ["N", 2]
    assert "optimizer_state/layers.0.weight.momentum_buffer" in manifest["results"]["optional"]


def test_the_docs_round_trip_runs(tmp_path, capsys, monkeypatch):
    """docs/traces.md's three commands, as shown (the outside program by its main())."""
    page = (ROOT / "docs" / "traces.md").read_text()
    shown = ["backprop-check export clients/momentum.toml trace", "python clients/trace_mlp.py trace --every 5",
             "backprop-check verify clients/momentum.toml trace"]
    assert "\n".join(f"    {c}" for c in shown) in page
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "momentum.toml").write_text(Path(SPEC).read_text())
    monkeypatch.chdir(tmp_path)
    assert cli.main(shown[0].split()[1:]) == 0
    assert WRITER.main(shown[1].split()[2:]) == 0
    assert cli.main(shown[2].split()[1:]) == 0
    assert "checked: iterations 0, 5, 10 (3 of 12); stages output, loss, delta, grad, optim, param" in page
    assert "checked: iterations 0, 5, 10 (3 of 12); stages output, loss, delta, grad, optim, param" in capsys.readouterr().out
