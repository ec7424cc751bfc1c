"""Plug-in implementations: loading --impl TARGET, the contract of train_step's result (conversions,
clear errors naming the key, exit 2), stages not reported, exceptions raised by the implementation."""
import json
import textwrap

import numpy as np
import pytest

import manual.trainer
from torch_ref import check
from torch_ref.cli import main as cli
from torch_ref.implementation.contract import Conformer
from torch_ref.errors import ImplError

from conftest import SPECS, make_desc

WORKED = str(SPECS / "worked_example.toml")


class Wrapped:
    """The manual engine with its train_step result passed through `edit(it, result)`."""

    def __init__(self, desc, edit):
        self.inner, self.edit, self.it = manual.trainer.build(desc), edit, -1

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def train_step(self, x, y):
        self.it += 1
        return self.edit(self.it, self.inner.train_step(x, y))


def run(edit, desc=None, **kw):
    desc = desc or make_desc([3, 4, 2], "tanh", steps=4, batch_size=3)
    return check(desc, Wrapped(desc, edit), **kw)


def to_lists(it, r):
    tolist = lambda v: v.tolist() if isinstance(v, np.ndarray) else v
    return {k: ({n: tolist(a) for n, a in v.items()} if isinstance(v, dict) else tolist(v)) for k, v in r.items()}


# --- conversions: accepted forms give the same verdict as the engine itself --------------------

@pytest.mark.parametrize("edit", [
    to_lists,                                                                  # plain Python lists
    lambda it, r: {**r, "loss": np.float64(r["loss"])},                        # numpy scalar
    lambda it, r: {**r, "loss": np.array([r["loss"]])},                        # size-1 array
    lambda it, r: {**r, "output": np.asfortranarray(r["output"])},             # any memory layout
], ids=["lists", "numpy-scalar-loss", "size-1-loss", "fortran-order"])
def test_accepted_forms_pass(edit):
    result = run(edit)
    assert result.ok, result.summary()
    assert result.steps_checked == 4 and result.not_reported == []


def test_integer_and_float32_values_are_converted_to_float64():
    ref = {"output": np.zeros((2, 1)), "loss": 0.0, "grads": {"w": np.zeros((1, 2))},
           "state_dict": {"w": np.zeros((1, 2))}}
    got = Conformer()(0, {"output": [[1], [2]], "loss": np.int32(3),
                          "grads": {"w": np.array([[1, 2]], np.int16)},
                          "state_dict": {"w": np.array([[0.5, 0.25]], np.float32)}}, ref)
    assert got["output"].dtype == got["grads"]["w"].dtype == got["state_dict"]["w"].dtype == np.float64
    assert got["output"].tolist() == [[1.0], [2.0]] and got["loss"] == 3.0
    assert got["state_dict"]["w"].tolist() == [[0.5, 0.25]]


def test_float32_implementation_in_a_float32_run():
    desc = make_desc([3, 4, 2], "tanh", steps=4, batch_size=3, dtype="float32")
    to32 = lambda it, r: {**to_lists(it, r), "output": np.asarray(r["output"], np.float32)}
    assert check(desc, Wrapped(desc, to32)).ok


def test_values_are_really_compared_after_conversion():
    """Converting must not mean trusting: a wrong number given as a list is still caught."""
    def off(it, r):
        r = to_lists(it, r)
        r["grads"]["layers.0.weight"][1][2] += 1e-6
        return r
    result = run(off)
    m = result.first_mismatch
    assert (m.iteration, m.stage, m.name, m.index) == (0, "grad", "layers.0.weight", (1, 2))


# --- the contract: a clear error naming the key (ImplError, exit 2) ----------------------------

def drop(key, name=None):
    def edit(it, r):
        r = dict(r)
        if name is None:
            del r[key]
        else:
            r[key] = {k: v for k, v in r[key].items() if k != name}
        return r
    return edit


def setting(key, value, at=0):
    def edit(it, r):
        if it == at:
            r = dict(r)
            if isinstance(key, tuple):
                r[key[0]] = {**r[key[0]], key[1]: value(r[key[0]][key[1]])}
            else:
                r[key] = value(r[key])
        return r
    return edit


BROKEN_CONTRACTS = [
    (drop("output"), "returned no 'output'"),
    (drop("loss"), "returned no 'loss'"),
    (drop("grads"), "returned no 'grads'"),
    (drop("state_dict"), "returned no 'state_dict'"),
    (drop("grads", "layers.1.bias"), "no grads['layers.1.bias']"),
    (setting(("grads", "layers.0.weight"), lambda g: g.T), "grads['layers.0.weight'] with shape (3, 4); expected (4, 3)"),
    (setting("output", lambda o: o[0]), "'output' with shape (2,); expected (3, 2)"),
    (setting(("state_dict", "layers.1.bias"), lambda b: ["a", "b"]), "state_dict['layers.1.bias'] of dtype <U1"),
    (setting(("grads", "layers.0.bias"), lambda b: [1.0, [2.0]]), "grads['layers.0.bias'] that is not an array"),
    (setting("loss", lambda v: "0.5"), "'loss' of dtype <U3"),
    (setting("loss", lambda v: [v, v]), "'loss' with shape (2,); expected a single number"),
    (setting("loss", lambda v: None), "'loss' of dtype object"),
    (setting("grads", lambda g: {**g, "layers.9.weight": np.zeros(2)}), "grads['layers.9.weight'], not a tensor"),
    (setting("grads", lambda g: [g]), "'grads' as a list"),
    (lambda it, r: None, "returned a NoneType"),
    (setting(("grads", "layers.0.weight"), lambda g: g.T, at=2), "at iteration 2 returned grads['layers.0.weight']"),
    (lambda it, r: r if it == 0 else drop("deltas")(it, r), "at iteration 1 reports ['optimizer_state']"),
    (lambda it, r: r if it == 2 else drop("deltas")(it, r), "at iteration 2 reports ['deltas', 'optimizer_state']"),
]


@pytest.mark.parametrize("edit,needle", BROKEN_CONTRACTS, ids=[b[1][:40] for b in BROKEN_CONTRACTS])
def test_broken_contract_is_a_clear_error(edit, needle):
    with pytest.raises(ImplError) as e:
        run(edit)
    assert e.value.field == "--impl"
    assert needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


# --- loading --impl TARGET, from the command --------------------------------------------------

def write(tmp_path, body, name="impl.py"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(body))
    return f


GOOD_IMPL = """
    import manual.trainer

    def build(desc):
        return manual.trainer.build(desc)

    not_callable = 3

    def raising(desc):
        raise RuntimeError("no GPU\\nfound")

    def returns_junk(desc):
        return object()

    def drops_deltas(desc):
        inner = manual.trainer.build(desc)
        class Impl:
            load_state_dict = inner.load_state_dict
            def train_step(self, x, y):
                r = inner.train_step(x, y)
                del r["deltas"]
                return r
        return Impl()

    def crashes(desc):
        inner = manual.trainer.build(desc)
        class Impl:
            n = 0
            load_state_dict = inner.load_state_dict
            def train_step(self, x, y):
                self.n += 1
                if self.n == 4:
                    return 1 / 0
                return inner.train_step(x, y)
        return Impl()

    def crashes_loading(desc):
        class Impl:
            def load_state_dict(self, state):
                state["layers.7.weight"]
            def train_step(self, x, y):
                pass
        return Impl()
"""


@pytest.mark.parametrize("target,needle", [
    ("{f}:build", None),
    ("manual.trainer:build", None),
    ("{f}:nope", "has no attribute 'nope'"),
    ("{f}:not_callable", "is not callable"),
    ("{f}:raising", "the factory '{f}:raising' raised RuntimeError: no GPU found"),
    ("{f}:returns_junk", "returned a object without a load_state_dict() method"),
    ("{dir}/missing.py:build", "no such file"),
    ("no_such_package.mod:build", "no module named 'no_such_package'"),
    ("manual.trainer:Nope", "has no attribute 'Nope'"),
    ("{f}", "expected package.module:factory or path/to/file.py:factory"),
    ("{bad}:build", "importing '{bad}' raised SyntaxError"),
])
def test_impl_target(tmp_path, capsys, target, needle):
    f = write(tmp_path, GOOD_IMPL)
    bad = write(tmp_path, "def build(desc:\n", "bad.py")
    fill = lambda s: s.format(f=f, dir=tmp_path, bad=bad)
    code = cli.main(["run", WORKED, "--steps", "3", "--impl", fill(target)])
    out, err = capsys.readouterr()
    if needle is None:
        assert code == 0 and "PASS: 3 iteration(s)" in out, err
        return
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("backprop-check: error: --impl: ") and fill(needle) in err, err


def test_a_stage_not_reported_is_never_shown_as_passed(tmp_path, capsys):
    f = write(tmp_path, GOOD_IMPL)
    code = cli.main(["run", WORKED, "--steps", "5", "--impl", f"{f}:drops_deltas", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ok"] is True
    assert out["not_reported"] == ["delta"]
    assert "delta" not in out["max_abs_err"] and "delta" not in out["stats"]
    assert cli.main(["run", WORKED, "--steps", "5", "--impl", f"{f}:drops_deltas"]) == 0
    text = capsys.readouterr().out
    delta_line = next(line for line in text.splitlines() if line.strip().startswith("delta"))
    assert "not reported" in delta_line and "e-" not in delta_line


def test_not_reported_does_not_hide_a_mistake_in_a_later_stage():
    def no_deltas_wrong_grad(it, r):
        r = drop("deltas")(it, r)
        r["grads"] = {**r["grads"], "layers.1.weight": 2 * r["grads"]["layers.1.weight"]}
        return r
    result = run(no_deltas_wrong_grad)
    assert not result.ok and result.not_reported == ["delta"]
    assert (result.first_mismatch.stage, result.first_mismatch.name) == ("grad", "layers.1.weight")
    assert result.first_mismatch.passed_before == ["output", "loss"]
    assert result.not_reached == ["param"] and set(result.stats) == {"output", "loss", "grad"}
    assert "param    not reached" in result.summary()


def test_optimizer_state_not_reported():
    desc = make_desc([3, 4, 2], "tanh", steps=3, batch_size=3)
    desc["optimizer"] = {**desc["optimizer"], "momentum": 0.9}
    result = check(desc, Wrapped(desc, drop("optimizer_state")))
    assert result.ok and result.not_reported == ["optim"]
    assert "optim" not in result.stats
    assert check(desc).stats.keys() >= {"optim"}  # the engine itself reports it


def test_exception_in_train_step_fails_naming_the_iteration(tmp_path, capsys):
    f = write(tmp_path, GOOD_IMPL)
    code = cli.main(["run", WORKED, "--steps", "10", "--impl", f"{f}:crashes", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["ok"] is False and out["steps_checked"] == 3
    m = out["first_mismatch"]
    assert (m["iteration"], m["stage"], m["name"]) == (3, "exception", "train_step(x, y)")
    assert m["detail"] == "train_step(x, y) raised ZeroDivisionError: division by zero"
    assert cli.main(["run", WORKED, "--steps", "10", "--impl", f"{f}:crashes"]) == 1
    text = capsys.readouterr().out
    assert "FAIL: 3 iteration(s)" in text
    assert "the implementation failed at iteration 3: train_step(x, y) raised ZeroDivisionError" in text


def test_exception_in_load_state_dict(tmp_path, capsys):
    f = write(tmp_path, GOOD_IMPL)
    assert cli.main(["run", WORKED, "--impl", f"{f}:crashes_loading"]) == 1
    text = capsys.readouterr().out
    assert "FAIL: 0 iteration(s)" in text
    assert "load_state_dict(state) raised KeyError: 'layers.7.weight'" in text


def test_broken_contract_from_the_command_is_one_line_exit_2(tmp_path, capsys):
    f = write(tmp_path, """
        import manual.trainer
        def build(desc):
            inner = manual.trainer.build(desc)
            class Impl:
                load_state_dict = inner.load_state_dict
                def train_step(self, x, y):
                    r = inner.train_step(x, y)
                    r["grads"]["layers.1.weight"] = r["grads"]["layers.1.weight"][:1]
                    return r
            return Impl()
    """)
    code = cli.main(["run", WORKED, "--impl", f"{f}:build"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == ("backprop-check: error: --impl: train_step(x, y) at iteration 0 returned "
                                "grads['layers.1.weight'] with shape (1, 2); expected (2, 2)")


# --- the Python API accepts every form of description and implementation -----------------------

def test_check_accepts_paths_dicts_targets_factories_and_overrides(worked, raw):
    from torch_ref import assert_lockstep
    forms = [
        (WORKED, None),                                  # a path; manual
        (raw, "manual.trainer:build"),                   # a raw dict; a TARGET string
        (worked, manual.trainer.build),                  # a parsed dict; a factory function
        (worked, manual.trainer.Trainer),                # a class
        (worked, manual.trainer.build(worked)),          # an instance
    ]
    for desc, impl in forms:
        result = assert_lockstep(desc, impl, steps=3, dtype="float32")
        assert result.ok and result.steps_checked == 3 and result.dtype == "float32"
    with pytest.raises(ImplError, match="no module named 'nowhere'"):
        check(WORKED, "nowhere:build")
    from torch_ref.description.spec import SpecError
    with pytest.raises(SpecError, match="run.steps"):
        check(WORKED, steps=0)


def test_an_implementation_that_changes_its_batch_in_place_cannot_reach_the_twin():
    def centre_in_place(impl):
        train_step = impl.train_step

        def step(x, y):
            r = train_step(x, y)
            x -= 1.0  # after its own use: harmless to it, fatal to a shared batch
            return r
        impl.train_step = step
        return impl
    desc = make_desc([3, 4, 2], "tanh", steps=4, batch_size=3)
    assert check(desc, centre_in_place(manual.trainer.build(desc))).ok


def test_exception_when_resynced_names_the_iteration():
    desc = make_desc([3, 4, 2], "tanh", steps=5, batch_size=3)
    impl = manual.trainer.build(desc)
    load, calls = impl.load_state_dict, []

    def load_twice_then_fail(state):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("out of memory")
        load(state)
    impl.load_state_dict = load_twice_then_fail
    result = check(desc, impl, mode="resync")
    m = result.first_mismatch
    assert (m.iteration, m.stage, result.steps_checked) == (2, "exception", 2)
    assert m.detail == "load_state_dict(state) (resync) raised MemoryError: out of memory"


@pytest.mark.parametrize("args,flag", [
    (["--impl", "manual.trainer:build", "--only", "manual"], "--impl"),
    (["--fd", "--only", "twin"], "--fd"),
    (["--fd-steps", "2", "--ranks", "2"], "--fd"),
])
def test_impl_and_fd_refused_where_there_is_no_lockstep(capsys, args, flag):
    assert cli.main(["run", WORKED, *args]) == 2
    assert capsys.readouterr().err.startswith(f"backprop-check: error: {flag}: checks the lockstep run")


def test_a_file_target_imports_its_sibling_modules(tmp_path, capsys):
    write(tmp_path, "import manual.trainer\nbuild = manual.trainer.build\n", "my_sibling_helpers.py")
    f = write(tmp_path, "from my_sibling_helpers import build\n", "my_impl.py")
    assert cli.main(["run", WORKED, "--steps", "2", "--impl", f"{f}:build"]) == 0, capsys.readouterr().err
