"""The --html page in a real browser: Debian's chromium, headless, driven through subprocess (its
--dump-dom gives the DOM after the page's script ran). The network is disabled for every load
(a proxy that does not exist, no name resolves): the page must work from file:// alone. Where no
chromium is installed, these tests skip, saying so."""
import json
import re
import shutil
import subprocess

import pytest

from torch_ref.cli.main import main

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (.ci/run installs Debian's)")
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-bypass-list=<-loopback>"]


def load(path, fragment=""):
    """(DOM after the scripts ran, the browser's console log) of file://path#fragment."""
    proc = subprocess.run([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                           "--v=0", *OFFLINE, "--dump-dom", f"file://{path}#{fragment}"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout, proc.stderr


def cells(dom):
    """{data-k: the number shown} of the page's figures (loss, per stage max abs/rel diff)."""
    return {k: float(v) for k, v in re.findall(r'data-k="([^"]+)"[^>]*>([-0-9.e+]+)<', dom) if not k.endswith(".over")}


def console_errors(log):
    return [line for line in log.splitlines() if "CONSOLE" in line and ("rror" in line or "Uncaught" in line)]


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    d = tmp_path_factory.mktemp("pass")
    assert main(["run", "worked_example", "--steps", "12", "--html", str(d / "p.html"), "--report", str(d / "p.json")]) == 0
    return d / "p.html", json.loads((d / "p.json").read_text())


def expected(rep, k):
    per = rep["per_iteration"]
    want = {"loss.manual": per["loss"]["manual"][k], "loss.reference": per["loss"]["reference"][k]}
    for stage, s in per["stages"].items():
        for key in ("max_abs_err", "max_rel_err", "twin_abs_err", "allowance"):  # (the last two: shadow mode's)
            if key in s and s[key][k] is not None:  # (None: not compared, shown as a dash)
                want[f"{stage}.{key}"] = s[key][k]
    return want


@pytest.mark.parametrize("fragment, k", [("iteration=7", 7), ("drive=input:4", 4), ("iteration=2&drive=right:3", 5)])
def test_the_page_shows_the_json_reports_figures_at_iteration_k(passing, fragment, k):
    """A fragment, the slider's input handler and the arrow keys all land on iteration k's figures."""
    path, rep = passing
    dom, log = load(path, fragment)
    assert 'data-ready="1"' in dom and console_errors(log) == []
    assert re.search(r'id="errors">\s*</div>', dom)  # no script error caught by the page either
    assert re.search(rf'id="iteration">{k} of 12<', dom)
    assert cells(dom) == pytest.approx(expected(rep, k), rel=0, abs=0)


@pytest.mark.parametrize("mistake, stage, tensor", [
    ("HiddenErrorOneOutput", "delta", "layers.0"),
    ("LossMissingHalf", "loss", "loss"),
])
def test_the_first_mismatch_is_opened_and_highlighted(tmp_path, mistake, stage, tensor):
    path, report = tmp_path / "f.html", tmp_path / "f.json"
    assert main(["run", "worked_example", "--steps", "3", "--impl", f"torch_ref.zoo.mistakes:{mistake}",
                 "--html", str(path), "--report", str(report)]) == 1
    first = json.loads(report.read_text())["first_mismatch"]
    assert (first["stage"], first["name"]) == (stage, tensor)
    dom, log = load(path)
    assert console_errors(log) == []
    assert re.search(rf'data-tensor="{stage}/{re.escape(tensor)}" id="first-mismatch-tensor"', dom)
    element = re.search(r'data-index="([0-9,]*)" id="first-mismatch-element"', dom)
    assert element and element.group(1) == ",".join(map(str, first["index"]))
    assert f"lockstep mismatch at iteration {first['iteration']}, stage &#39;{stage}&#39;" in dom.replace("'", "&#39;")


def test_a_shadow_mode_page_shows_the_distances_and_opens_the_mismatch(tmp_path):
    """Shadow mode: the report's distances from the float64 shadow and allowances on the page, the
    float64 shadow's column, the first mismatch's element highlighted, the rule said in words."""
    path, report = tmp_path / "s.html", tmp_path / "s.json"
    assert main(["run", "worked_example", "--dtype", "float32", "--mode", "shadow", "--steps", "3", "--quiet",
                 "--no-attribution", "--impl", "torch_ref.zoo.mistakes:HiddenErrorOneOutput",
                 "--html", str(path), "--report", str(report)]) == 1
    rep = json.loads(report.read_text())
    first = rep["first_mismatch"]
    dom, log = load(path)
    assert console_errors(log) == [] and re.search(r'id="errors">\s*</div>', dom)
    want = expected(rep, first["iteration"])
    assert {k for k in want if k.endswith((".twin_abs_err", ".allowance"))}  # shadow's figures are there
    assert cells(dom) == pytest.approx(want, rel=0, abs=0)
    assert "float64 shadow</th>" in dom and "distance from a float64 shadow twin" in dom
    assert re.search(rf'data-tensor="{first["stage"]}/{re.escape(first["name"])}" id="first-mismatch-tensor"', dom)
    element = re.search(r'data-index="([0-9,]*)" id="first-mismatch-element"', dom)
    assert element and element.group(1) == ",".join(map(str, first["index"]))


def test_a_data_parallel_page_says_so_and_shows_the_reports_figures(ranks_page):
    path, report = ranks_page
    rep = json.loads(report.read_text())
    dom, log = load(path)
    assert console_errors(log) == [] and re.search(r'id="errors">\s*</div>', dom)
    assert re.search(r'id="parallel">data-parallel run: DistributedDataParallel on 2 rank\(s\) \(backend gloo', dom)
    assert cells(dom) == pytest.approx(expected(rep, 0), rel=0, abs=0)
    assert re.search(r'data-tensor="loss/loss" id="first-mismatch-tensor"', dom)
