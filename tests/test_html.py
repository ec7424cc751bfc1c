"""`--html FILE`: the page's path refused before a run, the page self-contained and written
atomically, what a long run keeps of its tensors, the size limit (the browser's view of the page:
tests/test_html_browser.py)."""
import json
import re

import pytest

from torch_ref import html
from torch_ref.cli.main import main
from torch_ref.description import spec
from torch_ref.html import page
from torch_ref.html.recorder import Recorder, quantize
from torch_ref.lockstep.run import lockstep


@pytest.mark.parametrize("args, says", [
    (["--html", "{tmp}/missing/page.html"], "--html: cannot write"),
    (["--html", "{tmp}/same", "--report", "{tmp}/same"], "must name different files"),
    (["--html", "{tmp}/p.html", "--ranks", "2"], "--html: checks the lockstep run"),
    (["--html", "{tmp}"], "it is a directory"),
])
def test_a_bad_html_path_is_refused_before_the_run(tmp_path, capsys, args, says):
    argv = ["run", "worked_example", "--steps", "2"] + [a.format(tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.html").exists() and not list(tmp_path.glob(".*"))  # nothing run, nothing left


def test_example_refuses_a_bad_html_path_before_its_run(tmp_path, capsys):
    assert main(["example", "--html", str(tmp_path / "no" / "x.html")]) == 2
    assert "--html: cannot write" in capsys.readouterr().err


def test_the_page_is_self_contained_and_holds_the_run(tmp_path, capsys):
    target = tmp_path / "run.html"
    target.write_text("old")
    assert main(["run", "worked_example", "--steps", "4", "--html", str(target), "--report", str(tmp_path / "r.json")]) == 0
    text = target.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # no network resource
    assert "<script src" not in text and "<link" not in text
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert data["iterations"] == rep["per_iteration"]["iterations"] == 4
    assert sorted(map(int, data["frames"])) == [0, 1, 2, 3]  # a short run: every iteration's tensors
    assert data["exact"]["2"]["loss"] == [rep["per_iteration"]["loss"]["manual"][2],
                                          rep["per_iteration"]["loss"]["reference"][2]]
    assert "PASS" in text.split('<div id="static">')[1][:300]  # without JavaScript: the verdict, the report
    assert not list(tmp_path.glob(".run.html.*"))  # the temporary file renamed, none left


def test_quantized_errors_over_the_allowance():
    q = quantize([float("nan"), 0.0, 1.0, 10.0, float("inf"), 1e-30])
    assert q.tolist()[0] == 0 and q[4] == 255 and q[1] == q[5] == 1
    assert 10 ** ((q[2] - 1) / 8 - 16) == pytest.approx(1.0) and q[3] - q[2] == 8


def test_a_long_run_keeps_a_window_before_the_stop_and_checkpoints():
    rec = html.recorder_for(spec.load("worked_example"))
    probe = Recorder(300, rec.rtol, rec.atol)
    lockstep(spec.override(spec.load("worked_example"), 1, None, None), record=probe)
    desc = spec.override(spec.load("worked_example"), 300, None, None)
    rec = Recorder(300, rec.rtol, rec.atol, budget=probe.frame_size * 40)  # room for 40 iterations
    result = lockstep(desc, record=rec)
    kept = sorted(rec.raw)
    assert result.ok and 299 in kept and 0 in kept
    assert len(kept) <= 40 + 1
    window = [it for it in kept if it % rec.every]
    assert len(window) == rec.window > 0  # the last iterations before the stop (checkpoints aside)
    assert window == [it for it in range(300) if it % rec.every][-rec.window:]
    assert all(it % rec.every == 0 for it in kept if it < window[0])  # before it: checkpoints only
    assert "every" in rec.policy() and "the last" in rec.policy()


def test_the_page_drops_iterations_to_stay_under_its_limit(tmp_path, monkeypatch):
    desc = spec.override(spec.load("worked_example"), 30, None, None)
    rec = html.recorder_for(desc)
    result = lockstep(desc, record=rec)
    full = page.data(result, desc, rec)
    monkeypatch.setattr(page, "LIMIT", len(page.render(full).encode()) - 20_000)
    d = page.data(result, desc, rec)
    text = page.fitted(d)
    assert len(text.encode()) <= page.LIMIT and d["dropped"] != []
    assert "29" in d["frames"] and "0" not in d["frames"]  # the stop kept, the first checkpoints dropped


@pytest.mark.slow
def test_a_100000_iteration_page_stays_under_the_limit(tmp_path):
    assert main(["run", "worked_example", "--steps", "100000", "--quiet", "--html", str(tmp_path / "p.html")]) == 0
    size = (tmp_path / "p.html").stat().st_size
    assert 1_000_000 < size <= page.LIMIT


@pytest.mark.parametrize("impl, infinite", [("torch_ref.zoo.mistakes:HiddenErrorOneOutput", False), (None, True)])
def test_the_plot_takes_a_failure_at_iteration_0_and_infinite_errors_without_warnings(tmp_path, impl, infinite):
    """--plot: errors over the allowance; a run stopped at iteration 0, an infinite error: no warning."""
    import warnings
    pytest.importorskip("matplotlib")
    from torch_ref import api, reports
    result = api.check("worked_example", impl, steps=3, report=str(tmp_path / "r.json"))
    assert result.ok is infinite
    if infinite:
        result.history.over[1, 2] = result.history.rel[1, 2] = result.history.abs[1, 2] = float("inf")
    else:
        assert result.first_mismatch.iteration == 0 and result.not_reached
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports.write_plot(tmp_path / "p.png", result, spec.load("worked_example"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
