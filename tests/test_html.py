"""`--html FILE`: the page's path refused before a run, the page self-contained and written
atomically, what a long run keeps of its tensors, the size limit (the browser's view of the page:
tests/test_html_browser.py)."""
import base64
import json
import re

import numpy as np
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
    (["--html", "{tmp}/p.html", "--only", "manual"], "--html: reports a lockstep run (not with --only)"),
    (["--html", "{tmp}/p.html", "--ranks", "2", "--impl", "torch_ref.zoo.mistakes:LossMissingHalf"], "--impl"),
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
def test_the_plot_takes_a_failure_at_iteration_0_and_infinite_errors_without_warnings(tmp_path, monkeypatch, impl,
                                                                                      infinite):
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
    import matplotlib.axes
    drawn, plot = [], matplotlib.axes.Axes.plot

    def recording(ax, *args, **kw):  # every series drawn (x, y, ...): its y values
        drawn.append(np.asarray(args[1], dtype=float))
        return plot(ax, *args, **kw)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports.write_plot(tmp_path / "p.png", result, spec.load("worked_example"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert not any(np.isinf(y).any() for y in drawn)  # an infinite error is not silently left out...
    assert any((y >= 1e18).any() for y in drawn) == infinite  # ...it is drawn at the ceiling


def page_data(path):
    """The data the page's script reads, as the page holds it."""
    text = path.read_text()
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))


def run_page(tmp_path, argv, code):
    """Run `argv` with --html and --report; (the page's data, the JSON report)."""
    html_path, report = tmp_path / "p.html", tmp_path / "p.json"
    assert main(argv + ["--quiet", "--html", str(html_path), "--report", str(report)]) == code
    return page_data(html_path), json.loads(report.read_text())


SHADOW = ["run", "worked_example", "--dtype", "float32", "--mode", "shadow", "--steps", "4"]


@pytest.mark.parametrize("impl, code", [(None, 0), ("HiddenErrorOneOutput", 1), ("LossMissingHalf", 1)])
def test_a_shadow_mode_page_holds_both_distances_and_the_allowance_of_the_report(tmp_path, impl, code):
    """Shadow mode: the page's figures are the report's, distances from the float64 shadow with the
    allowance they were judged against; the ratio decides (at most 1 where it passed, above at the
    mismatch); the tensors carry the shadow's values, the worst element the mismatch's."""
    argv = SHADOW + (["--no-attribution", "--impl", f"torch_ref.zoo.mistakes:{impl}"] if impl else [])
    data, rep = run_page(tmp_path, argv, code)
    per = rep["per_iteration"]
    assert data["mode"] == rep["mode"] == "shadow" and set(rep["tolerance"]) == {"factor", "rtol", "atol"}
    assert data["iterations"] == per["iterations"] == (4 if code == 0 else 1)
    for k in range(per["iterations"]):
        for stage, v in per["stages"].items():
            assert data["exact"][str(k)]["stages"][stage][3:] == [v["twin_abs_err"][k], v["allowance"][k]]
    one = 1 + 8 * 16  # quantize(1.0): the chart's pass line
    for stage, q in data["series"]["over"].items():
        levels = base64.b64decode(q)
        bad = impl is not None and rep["first_mismatch"]["stage"] == stage
        assert all(0 < lv <= one for lv in levels[:-1]) and (levels[-1] > one) == bad
    frame = data["frames"][str(per["iterations"] - 1)]
    judged = [t for t in frame if t["allowance"] is not None]  # (None: after the mismatch, not compared)
    assert all("s" in t for t in frame) and all(t["allowance"] > 0 for t in judged)
    assert len(judged) == len(frame) if code == 0 else 0 < len(judged) < len(frame)
    if impl:
        first = rep["first_mismatch"]
        (t,) = [t for t in frame if (t["stage"], t["name"]) == (first["stage"], first["name"])]
        assert t["worst"] == first["index"] and t["over"] > 1 and t["worst_values"][0] == pytest.approx(first["manual"])


def check_ranks_page(data, rep, ranks, failed):
    per = rep["per_iteration"]
    assert data["parallel"]["ranks"] == ranks and data["parallel"]["backend"] == "gloo"
    assert data["iterations"] == per["iterations"] == (1 if failed else 3)
    for k in range(per["iterations"]):
        assert data["exact"][str(k)]["loss"] == [per["loss"]["manual"][k], per["loss"]["reference"][k]]
        assert {s: v[:2] for s, v in data["exact"][str(k)]["stages"].items()} == {
            s: [v["max_abs_err"][k], v["max_rel_err"][k]] for s, v in per["stages"].items()}
    frame = data["frames"][str(per["iterations"] - 1)]
    (out,) = [t for t in frame if t["stage"] == "output"]
    assert out["shape"] == [6, 2]  # the ranks' rows of the batch of 6, put back together
    if failed:
        assert (rep["first_mismatch"]["stage"], data["first_mismatch"]["rank"]) == ("loss", 0)
        assert "world size" in data["first_mismatch_text"]


def test_a_data_parallel_page_holds_rank_0s_comparisons_of_the_report(ranks_page):
    path, rep_path = ranks_page  # (tests/conftest.py: shared with the browser's test)
    check_ranks_page(page_data(path), json.loads(rep_path.read_text()), 2, failed=True)


@pytest.mark.slow  # a second launch of ranks (the failing one is the default profile's)
def test_a_passing_data_parallel_page(tmp_path):
    data, rep = run_page(tmp_path, ["run", "worked_example_batch6", "--ranks", "2", "--steps", "3"], 0)
    check_ranks_page(data, rep, 2, failed=False)
    assert rep["per_iteration"]["stages"]["grad"]["max_abs_err"][2] < 1e-12
