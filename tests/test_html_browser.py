"""The --html page in a real browser: Debian's chromium, headless. One browser for the module,
driven over its DevTools pipe (--remote-debugging-pipe: JSON commands on its file descriptor 3,
replies and events on 4, each ended by a NUL): every page is loaded in a tab of its own, and once
its load event has fired (when --dump-dom would dump it) the DOM after the page's script ran is
read, with what the page logged to its console. One launch instead of one per page: a chromium
start is about a second. The network is disabled (a proxy that does not exist, no name resolves):
the page must work from file:// alone. Where no chromium is installed, these tests skip, saying so."""
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest

from torch_ref.cli.main import main

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (.ci/run installs Debian's)")
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-bypass-list=<-loopback>"]


class Chromium:
    """A headless chromium and its DevTools pipe. `load(url)` -> (DOM, console messages)."""

    def __init__(self):
        commands, self._to = os.pipe()  # we write commands; chromium reads them on its fd 3
        self._from, replies = os.pipe()  # chromium writes on its fd 4; we read

        def on_3_and_4():  # in the child, before exec: the pipe's ends as fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands, replies)]  # clear of 3 and 4
            for fd, high_fd in zip((3, 4), high):
                os.dup2(high_fd, fd)

        self.proc = subprocess.Popen([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", *OFFLINE,
                                      "--remote-debugging-pipe", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=on_3_and_4, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self._buffer, self._events, self._id = b"", [], 0

    def close(self):
        os.close(self._to)
        try:
            self.proc.wait(timeout=10)  # the pipe closed: chromium exits
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from)

    def _message(self, deadline):
        """The next message from chromium (a dict), waiting at most until `deadline`."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                pytest.fail("chromium did not answer in time")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                pytest.fail(f"chromium closed its DevTools pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=None, timeout=60, **params):
        """Send one command and return its result; the events that come meanwhile are kept."""
        self._id += 1
        command = {"id": self._id, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        os.write(self._to, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self._id:
                assert "error" not in m, (method, m["error"])
                return m["result"]
            self._events.append(m)

    def _wait_for(self, method, session, timeout=60):
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._message(deadline))

    def load(self, url):
        """(DOM after the page's scripts ran, [what the page logged: one line per console call or
        uncaught exception, "LEVEL: text"]) of `url`, loaded in a fresh tab."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session)
        self._events.clear()
        self.send("Page.navigate", session, url=url)
        self._wait_for("Page.loadEventFired", session)
        dom = self.send("Runtime.evaluate", session, expression="document.documentElement.outerHTML",
                        returnByValue=True)["result"]["value"]
        log = [_console_line(e["method"], e["params"]) for e in self._events if e.get("sessionId") == session]
        self.send("Target.closeTarget", targetId=target)
        return dom, [line for line in log if line]


def _console_line(method, params):
    """One event of the page as a line of its console log, or None for an event that is not one."""
    if method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return f"{params['type']}: {text}"
    if method == "Runtime.exceptionThrown":
        d = params["exceptionDetails"]
        return f"error: Uncaught {d.get('exception', {}).get('description', d.get('text', ''))}"
    if method == "Log.entryAdded":
        return f"{params['entry']['level']}: {params['entry']['text']}"
    return None


@pytest.fixture(scope="module")
def browser():
    b = Chromium()
    yield b
    b.close()


def load(browser, path, fragment=""):
    """(DOM after the scripts ran, the page's console log) of file://path#fragment."""
    return browser.load(f"file://{path}#{fragment}")


def cells(dom):
    """{data-k: the number shown} of the page's figures (loss, per stage max abs/rel diff)."""
    return {k: float(v) for k, v in re.findall(r'data-k="([^"]+)"[^>]*>([-0-9.e+]+)<', dom) if not k.endswith(".over")}


def console_errors(log):
    return [line for line in log if line.startswith("error:") or "rror" in line or "Uncaught" in line]


def test_the_console_log_is_read(browser, tmp_path):
    """The harness itself: a page that logs an error and throws is seen to, or `console_errors(...)
    == []` below could pass on a page that fails."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><body><script>console.error('spoiled'); document.body.id = 'ran';"
                    " no_such_function();</script></body>")
    dom, log = load(browser, page)
    assert 'id="ran"' in dom
    errors = console_errors(log)
    assert any("spoiled" in e for e in errors) and any("Uncaught" in e and "no_such_function" in e for e in errors), log


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
def test_the_page_shows_the_json_reports_figures_at_iteration_k(browser, passing, fragment, k):
    """A fragment, the slider's input handler and the arrow keys all land on iteration k's figures."""
    path, rep = passing
    dom, log = load(browser, path, fragment)
    assert 'data-ready="1"' in dom and console_errors(log) == []
    assert re.search(r'id="errors">\s*</div>', dom)  # no script error caught by the page either
    assert re.search(rf'id="iteration">{k} of 12<', dom)
    assert cells(dom) == pytest.approx(expected(rep, k), rel=0, abs=0)


@pytest.mark.parametrize("mistake, stage, tensor", [
    ("HiddenErrorOneOutput", "delta", "layers.0"),
    ("LossMissingHalf", "loss", "loss"),
])
def test_the_first_mismatch_is_opened_and_highlighted(browser, tmp_path, mistake, stage, tensor):
    path, report = tmp_path / "f.html", tmp_path / "f.json"
    assert main(["run", "worked_example", "--steps", "3", "--impl", f"torch_ref.zoo.mistakes:{mistake}",
                 "--html", str(path), "--report", str(report)]) == 1
    first = json.loads(report.read_text())["first_mismatch"]
    assert (first["stage"], first["name"]) == (stage, tensor)
    dom, log = load(browser, path)
    assert console_errors(log) == []
    assert re.search(rf'data-tensor="{stage}/{re.escape(tensor)}" id="first-mismatch-tensor"', dom)
    element = re.search(r'data-index="([0-9,]*)" id="first-mismatch-element"', dom)
    assert element and element.group(1) == ",".join(map(str, first["index"]))
    assert f"lockstep mismatch at iteration {first['iteration']}, stage &#39;{stage}&#39;" in dom.replace("'", "&#39;")


def test_a_shadow_mode_page_shows_the_distances_and_opens_the_mismatch(browser, tmp_path):
    """Shadow mode: the report's distances from the float64 shadow and allowances on the page, the
    float64 shadow's column, the first mismatch's element highlighted, the rule said in words."""
    path, report = tmp_path / "s.html", tmp_path / "s.json"
    assert main(["run", "worked_example", "--dtype", "float32", "--mode", "shadow", "--steps", "3", "--quiet",
                 "--no-attribution", "--impl", "torch_ref.zoo.mistakes:HiddenErrorOneOutput",
                 "--html", str(path), "--report", str(report)]) == 1
    rep = json.loads(report.read_text())
    first = rep["first_mismatch"]
    dom, log = load(browser, path)
    assert console_errors(log) == [] and re.search(r'id="errors">\s*</div>', dom)
    want = expected(rep, first["iteration"])
    assert {k for k in want if k.endswith((".twin_abs_err", ".allowance"))}  # shadow's figures are there
    assert cells(dom) == pytest.approx(want, rel=0, abs=0)
    assert "float64 shadow</th>" in dom and "distance from a float64 shadow twin" in dom
    assert re.search(rf'data-tensor="{first["stage"]}/{re.escape(first["name"])}" id="first-mismatch-tensor"', dom)
    element = re.search(r'data-index="([0-9,]*)" id="first-mismatch-element"', dom)
    assert element and element.group(1) == ",".join(map(str, first["index"]))


def test_a_data_parallel_page_says_so_and_shows_the_reports_figures(browser, ranks_page):
    path, report = ranks_page
    rep = json.loads(report.read_text())
    dom, log = load(browser, path)
    assert console_errors(log) == [] and re.search(r'id="errors">\s*</div>', dom)
    assert re.search(r'id="parallel">data-parallel run: DistributedDataParallel on 2 rank\(s\) \(backend gloo', dom)
    assert cells(dom) == pytest.approx(expected(rep, 0), rel=0, abs=0)
    assert re.search(r'data-tensor="loss/loss" id="first-mismatch-tensor"', dom)
