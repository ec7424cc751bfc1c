"""Failures that must never read as a pass: a plug-in that exits, raises a BaseException, hangs,
or prints on stdout under --json; shadow mode stopping as the plain loop does. And --skip-stage.

(A factory raising an Exception refuses the description, exit 2: tests/test_plugin.py.)"""
import json
import signal
import textwrap

import numpy as np
import pytest

import manual.trainer
from torch_ref import check
from torch_ref.cli import main as cli
from torch_ref.interrupt import Interrupted
from torch_ref.description.spec import SpecError

from conftest import SPECS, make_desc

WORKED = str(SPECS / "worked_example.toml")


def strict_json(text):
    """json.loads refusing NaN, Infinity and -Infinity: what any JSON parser accepts."""
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def write(tmp_path, body, name="impl.py"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(body))
    return f


# Each factory: the manual engine, with one call doing something no implementation should.
PLUGINS = """
    import os, subprocess, sys, time
    import manual.trainer

    print("printed at import")

    class Impl:
        def __init__(self, desc, when=None, what=None):
            self.inner, self.when, self.what, self.it = manual.trainer.build(desc), when, what, -1
        def act(self, call):
            if call == self.when:
                self.what()
        def load_state_dict(self, state):
            self.act("load")
            self.inner.load_state_dict(state)
        def load_optimizer_state(self, flat):
            self.act("optim")
            self.inner.load_optimizer_state(flat)
        def train_step(self, x, y):
            self.it += 1
            if self.it == 2:
                self.act("step")
            return self.inner.train_step(x, y)

    def exit0():
        sys.exit(0)

    def keyboard():
        raise KeyboardInterrupt

    class Custom(BaseException):
        pass

    def custom():
        raise Custom("my own")

    def hang():
        time.sleep(30)

    def chatty():
        print("a print from Python")
        sys.stdout.flush()
        os.write(1, b"a write to file descriptor 1\\n")
        subprocess.run(["echo", "a print from a subprocess"])

    def exits_in_factory(desc):
        sys.exit(0)

    def hangs_in_factory(desc):
        time.sleep(30)

    def exits_in_step(desc):
        return Impl(desc, "step", exit0)

    def exits_in_load(desc):
        return Impl(desc, "load", lambda: sys.exit(3))

    def interrupts_in_step(desc):
        return Impl(desc, "step", keyboard)

    def custom_in_resync(desc):
        return Impl(desc, "optim", custom)

    def hangs_in_step(desc):
        return Impl(desc, "step", hang)

    def chatty_in_step(desc):
        print("printed by the factory")
        return Impl(desc, "step", chatty)
"""

# (factory, extra flags, iteration, the call, the detail)
FAILURES = [
    ("exits_in_factory", [], 0, "factory(desc)", "the factory '{f}:exits_in_factory' raised SystemExit: 0"),
    ("exits_in_step", [], 2, "train_step(x, y)", "train_step(x, y) raised SystemExit: 0"),
    ("exits_in_load", [], 0, "load_state_dict(state)", "load_state_dict(state) raised SystemExit: 3"),
    ("interrupts_in_step", [], 2, "train_step(x, y)", "train_step(x, y) raised KeyboardInterrupt"),
    ("custom_in_resync", ["--mode", "resync"], 1, "load_optimizer_state(state)",
     "load_optimizer_state(state) (resync) raised Custom: my own"),
    ("hangs_in_step", ["--step-timeout", "0.2"], 2, "train_step(x, y)",
     "train_step(x, y) did not return within 0.2 s (the per-call limit, --step-timeout)"),
    ("hangs_in_factory", ["--step-timeout", "0.2"], 0, "factory(desc)",
     "the factory '{f}:hangs_in_factory' did not return within 0.2 s (the per-call limit, --step-timeout)"),
]


@pytest.mark.parametrize("factory,flags,it,call,detail", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_plugin_that_exits_raises_or_hangs_fails_naming_call_and_iteration(tmp_path, capsys, factory, flags,
                                                                             it, call, detail):
    f = write(tmp_path, PLUGINS)
    alarm = signal.getsignal(signal.SIGALRM)
    args = ["run", WORKED, "--steps", "5", "--impl", f"{f}:{factory}", *flags]
    assert cli.main(args + ["--json"]) == 1
    out = strict_json(capsys.readouterr().out)
    assert out["ok"] is False and out["steps_checked"] == it
    m = out["first_mismatch"]
    assert (m["iteration"], m["stage"], m["name"], m["detail"]) == (it, "exception", call, detail.format(f=f))
    assert cli.main(args) == 1
    text = capsys.readouterr().out
    assert f"implementation: {f}:{factory}" in text
    assert f"the implementation failed at iteration {it}: {detail.format(f=f)}" in text
    assert signal.getsignal(signal.SIGALRM) is alarm  # the time limit left no handler behind


def test_a_real_interruption_is_not_the_plugins_failure():
    """torch_ref.interrupt.Interrupted (raised by the command's SIGINT/SIGTERM handler) goes through."""
    desc = make_desc([3, 4, 2], "tanh", steps=4, batch_size=3)
    impl = manual.trainer.build(desc)
    step, calls = impl.train_step, []

    def interrupted(x, y):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted(signal.SIGINT)
        return step(x, y)
    impl.train_step = interrupted
    with pytest.raises(Interrupted) as e:
        check(desc, impl)
    assert e.value.signum == signal.SIGINT


def test_an_import_that_exits_cannot_be_loaded(tmp_path, capsys):
    f = write(tmp_path, "import sys\nsys.exit(0)\n", "exits.py")
    assert cli.main(["run", WORKED, "--impl", f"{f}:build"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"backprop-check: error: --impl: importing '{f}' raised SystemExit: 0"


def test_json_is_the_only_thing_on_stdout(tmp_path, capfd):
    """Prints of the implementation (at import, in its factory, in train_step, from Python, from file
    descriptor 1 and from a subprocess) go to stderr; stdout holds one strict JSON document."""
    f = write(tmp_path, PLUGINS, "chatty_impl.py")
    assert cli.main(["run", WORKED, "--steps", "4", "--impl", f"{f}:chatty_in_step", "--json"]) == 0
    out, err = capfd.readouterr()
    assert strict_json(out)["ok"] is True
    for line in ("printed at import", "printed by the factory", "a print from Python",
                 "a write to file descriptor 1", "a print from a subprocess"):
        assert line in err and line not in out


class RaisesAtOnce:
    def load_state_dict(self, state):
        pass

    def train_step(self, x, y):
        raise ZeroDivisionError("in my backward")


def test_json_of_a_run_that_raised_is_strict(capsys, monkeypatch):
    """No bare NaN (the losses of a run that stopped before any step): null instead."""
    import torch_ref.implementation.plugin
    monkeypatch.setattr(torch_ref.implementation.plugin, "load", lambda target: lambda desc: RaisesAtOnce())
    assert cli.main(["run", WORKED, "--impl", "any:factory", "--json"]) == 1
    out = strict_json(capsys.readouterr().out)
    assert out["final_loss"] == {"manual": None, "reference": out["final_loss"]["reference"]}
    assert out["first_mismatch"]["manual"] is None


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_bad_step_timeout_is_refused(capsys, value):
    assert cli.main(["run", WORKED, "--step-timeout", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backprop-check: error: --step-timeout: ") and len(err.strip().splitlines()) == 1


def test_step_timeout_from_python():
    desc = make_desc([3, 4, 2], "tanh", steps=4, batch_size=3)
    impl = manual.trainer.build(desc)
    step = impl.train_step

    def slow_at_1(x, y):
        if impl.it == 1:
            import time
            time.sleep(30)
        impl.it += 1
        return step(x, y)
    impl.it, impl.train_step = 0, slow_at_1
    m = check(desc, impl, step_timeout=0.1).first_mismatch
    assert (m.iteration, m.stage, m.name) == (1, "exception", "train_step(x, y)")
    assert "did not return within 0.1 s" in m.detail


# --- shadow mode stops as the plain loop does --------------------------------------------------

def shadow_desc(steps=6, lr=0.1):
    return make_desc([3, 4, 2], "tanh", steps=steps, batch_size=3, dtype="float32", lr=lr)


class Crashes:
    def __init__(self, desc, at, where="train_step"):
        self.inner, self.at, self.where, self.it = manual.trainer.build(desc), at, where, 0

    def load_state_dict(self, state):
        if self.where == "load":
            raise SystemExit(0)
        self.inner.load_state_dict(state)

    def train_step(self, x, y):
        if self.it == self.at:
            raise ZeroDivisionError("division by zero")
        self.it += 1
        return self.inner.train_step(x, y)


@pytest.mark.parametrize("mode", ["free", "shadow"])
@pytest.mark.parametrize("at,where,detail", [
    (3, "train_step", "train_step(x, y) raised ZeroDivisionError: division by zero"),
    (0, "load", "load_state_dict(state) raised SystemExit: 0"),
])
def test_shadow_reports_an_exception_in_the_same_words(mode, at, where, detail):
    result = check(shadow_desc(), Crashes(shadow_desc(), at, where), mode=mode)
    m = result.first_mismatch
    assert not result.ok and result.steps_checked == at
    assert (m.iteration, m.stage, m.detail) == (at, "exception", detail)
    assert f"the implementation failed at iteration {at}: {detail}" in result.summary()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow, on the manual side
@pytest.mark.parametrize("mode", ["free", "shadow"])
def test_shadow_stops_when_the_reference_diverges(mode):
    """lr 1e30: the reference's loss leaves the finite numbers; both modes stop there, as a failure."""
    desc = make_desc([3, 4, 2], "relu", steps=30, batch_size=3, dtype="float32", lr=1e30)
    result = check(desc, mode=mode)
    m = result.first_mismatch
    assert not result.ok and m is not None and m.stage == "loss"
    assert "the run diverged and nothing after it can be checked" in m.detail
    assert not np.isfinite(m.reference) and result.steps_checked == m.iteration


# --- --skip-stage -----------------------------------------------------------------------------

class ReportsAnotherLoss:
    """Descends the loss, reports another (a clipped log of it); its gradients optionally wrong too."""

    def __init__(self, desc, wrong_grad=False):
        self.inner, self.wrong_grad = manual.trainer.build(desc), wrong_grad

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def train_step(self, x, y):
        r = self.inner.train_step(x, y)
        r["loss"] = float(np.log(max(r["loss"], 1e-3)))
        if self.wrong_grad:
            r["grads"] = {**r["grads"], "layers.0.bias": 2 * r["grads"]["layers.0.bias"]}
        return r


@pytest.mark.parametrize("mode,dtype", [("free", "float64"), ("resync", "float64"), ("shadow", "float32")])
def test_skip_stage_certifies_the_other_stages(mode, dtype):
    desc = make_desc([3, 4, 2], "tanh", steps=5, batch_size=3, dtype=dtype)
    plain = check(desc, ReportsAnotherLoss(desc), mode=mode)
    assert (plain.first_mismatch.iteration, plain.first_mismatch.stage) == (0, "loss")
    skipped = check(desc, ReportsAnotherLoss(desc), mode=mode, skip_stages=["loss"])
    assert skipped.ok and skipped.steps_checked == 5 and skipped.skipped == ["loss"]
    assert "loss" not in skipped.stats and {"output", "delta", "grad", "param"} <= set(skipped.stats)
    wrong = check(desc, ReportsAnotherLoss(desc, wrong_grad=True), mode=mode, skip_stages=["loss"])
    m = wrong.first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, "grad", "layers.0.bias")


def test_skip_stage_from_the_command(tmp_path, capsys):
    f = write(tmp_path, """
        import numpy as np
        import manual.trainer
        class Impl:
            def __init__(self, desc):
                self.inner = manual.trainer.build(desc)
            def load_state_dict(self, state):
                self.inner.load_state_dict(state)
            def train_step(self, x, y):
                r = self.inner.train_step(x, y)
                r["loss"] = float(np.log(r["loss"]))
                return r
    """)
    base = ["run", WORKED, "--steps", "3", "--impl", f"{f}:Impl"]
    assert cli.main(base) == 1
    assert "stage 'loss'" in capsys.readouterr().out
    assert cli.main(base + ["--skip-stage", "loss"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.strip().startswith("loss"))
    assert "skipped" in line and "e-" not in line and text.startswith("PASS")
    assert cli.main(base + ["--skip-stage", "loss", "--skip-stage", "optim", "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["skipped"] == ["loss", "optim"]
    report = tmp_path / "r.json"
    md = tmp_path / "r.md"
    assert cli.main(base + ["--skip-stage", "loss", "--report", str(report), "--markdown", str(md)]) == 0
    assert strict_json(report.read_text())["skipped"] == ["loss"]
    assert "| loss | skipped |" in md.read_text()


@pytest.mark.parametrize("stages,needle", [
    (["losses"], "unknown stage 'losses'"),
    (["output", "loss", "delta", "grad", "optim", "param"], "every stage skipped"),
])
def test_skip_stage_refuses_what_it_cannot_do(capsys, stages, needle):
    args = [a for s in stages for a in ("--skip-stage", s)]
    assert cli.main(["run", WORKED, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backprop-check: error: --skip-stage: ") and needle in err
    with pytest.raises(SpecError, match=needle):  # from Python too
        check(WORKED, skip_stages=stages)
