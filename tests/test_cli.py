"""The command: runs, JSON, overrides, and bad input (one line on stderr, exit code 2)."""
import json
import os
import subprocess
import sys

import pytest

from torch_ref.cli import main as cli

from conftest import SPECS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_four_layer_mixed_minibatch_passes(dtype, capsys):
    code = cli.main(["run", str(SPECS / "four_layer_mixed.toml"), "--dtype", dtype, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["ok"] is True and out["first_mismatch"] is None
    assert out["steps_checked"] == 500 and out["dtype"] == dtype
    assert set(out["max_abs_err"]) == set(out["max_rel_err"]) == {"output", "loss", "delta", "grad", "param"}


def test_steps_override_and_summary(capsys):
    assert cli.main(["run", str(SPECS / "worked_example.toml"), "--steps", "7"]) == 0
    assert "PASS: 7 iteration(s)" in capsys.readouterr().out


def spoil(raw, path, value):
    t = raw
    for k in path[:-1]:
        t = t[k]
    if value is DELETE:
        del t[path[-1]]
    else:
        t[path[-1]] = value
    return raw


DELETE = object()

BAD = [
    (("network", "sizes"), [2, 3, 2], "init.weights[0]"),             # sizes vs weights
    (("network", "sizes"), [2, 0, 2], "network.sizes"),
    (("network", "sizes"), "2,2,2", "network.sizes"),
    (("network", "activation"), "sigmod", "network.activation"),     # misspelled value
    (("network", "activation"), ["sigmoid"], "network.activation"),   # one per layer
    (("network", "loss"), DELETE, "network.loss"),                    # missing
    (("network", "lose"), "mse", "network.lose"),                     # misspelled field
    (("network", "bias"), "shared", "network.bias"),
    (("init", "weights"), [[[0.15, 0.2], [0.25, 0.3]]], "init.weights"),
    (("init", "biases"), [0.35, [0.6, 0.6]], "init.biases[1]"),
    (("init", "seed"), 3, "init"),                                    # both weights and seed
    (("optimizer", "lr"), -0.5, "optimizer.lr"),
    (("optimizer", "lr"), float("nan"), "optimizer.lr"),
    (("optimizer", "lr"), "fast", "optimizer.lr"),
    (("optimizer", "name"), "sgdd", "optimizer.name"),
    (("optimizer", "amsgrad"), True, "optimizer.amsgrad"),               # not an argument of sgd
    (("optimizer", "nesterov"), True, "optimizer.nesterov"),              # without momentum, as torch
    (("data", "x"), [[0.05, 0.10, 0.2]], "data.x[0]"),                # sizes vs data
    (("data", "y"), [[0.01, 0.99], [0.5, 0.5]], "data.y"),
    (("data", "x"), [[0.05, float("inf")]], "data.x[0][1]"),
    (("data", "batch_size"), 0, "data.batch_size"),
    (("run", "dtype"), "float16", "run.dtype"),
    (("run", "steps"), 1.5, "run.steps"),
    (("run", "device"), "tpu", "run.device"),
    (("extra",), {}, "extra"),
]


@pytest.mark.parametrize("path,value,field", BAD, ids=[f"{'.'.join(b[0])}={b[1]!r}"[:40] for b in BAD])
def test_bad_description_is_one_line_naming_the_field(tmp_path, raw, capsys, path, value, field):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(spoil(raw, path, value)))
    assert cli.main(["run", str(f)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"backprop-check: error: {field}:"), err


@pytest.mark.parametrize("args,needle", [
    (["run", "missing.toml"], "SPEC: cannot read"),
    (["run", str(SPECS / "worked_example.toml"), "--dtype", "float8"], "run.dtype"),
    (["run", str(SPECS / "worked_example.toml"), "--steps", "0"], "run.steps"),
    (["run", str(SPECS / "worked_example.toml"), "--steps", "many"], "--steps"),
    (["run", str(SPECS / "worked_example.toml"), "--mode", "lazy"], "mode"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2(args, needle, capsys):
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse's own refusals end the process with the code
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_bad_arguments_exit_2_in_a_real_process():
    """The same, once, through a real interpreter: exit status and stderr as a shell sees them."""
    program = ("import sys; from torch_ref.cli.main import main; code = main(['run', 'missing.toml']);"
               " print('torch' in sys.modules); sys.exit(code)")
    p = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert p.stdout == "False\n"  # refused before torch is imported: a bad input costs no torch start-up
    assert len(p.stderr.strip().splitlines()) == 1 and "SPEC: cannot read" in p.stderr, p.stderr


def test_a_closed_stdout_is_one_line_exit_2_not_a_traceback():
    """`backprop-check specs | head -0`: the reader is gone before the command writes."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "torch_ref.cli.main", "specs"], stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == ["backprop-check: error: stdout: closed before everything was written"], p.stderr


def test_invalid_toml_is_one_line(tmp_path, capsys):
    f = tmp_path / "broken.toml"
    f.write_text("[network\nsizes = [2, 2]\n")
    assert cli.main(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid TOML" in err


def test_cuda_unavailable_is_bad_input(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is valid here")
    assert cli.main(["run", str(SPECS / "worked_example.toml"), "--device", "cuda"]) == 2
    assert "run.device" in capsys.readouterr().err


def test_example_json_keys(worked_report, monkeypatch, capsys):
    from torch_ref import example
    monkeypatch.setattr(example, "report", lambda: worked_report)  # computed once for the session
    assert cli.main(["example", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
    for key in ("forward", "E_total", "grads", "updated", "E_after_1", "E_after_10000",
                "outputs_after_10000", "seed", "errata"):
        assert key in rep
    for e in rep["errata"]:
        assert {"figure", "seed", "correct", "difference", "explained_by", "explained_value"} <= set(e)
    assert {e["figure"]: e["explained_by"] for e in rep["errata"]}["E_after_1"] == "hidden-error-through-updated-weights"


@pytest.mark.parametrize("argv, call", [
    (["specs"], lambda api: api.specs()),
    (["run", "worked_example", "--steps", "3"], lambda api: api.check("worked_example", steps=3)),
    (["run", "worked_example", "--steps", "2", "--impl", "torch_ref.zoo.mistakes:LossMissingHalf"],
     lambda api: api.check("worked_example", "torch_ref.zoo.mistakes:LossMissingHalf", steps=2)),
], ids=["specs", "run", "run-impl"])
def test_a_command_prints_what_its_api_call_returns(argv, call, capsys):
    """The command only parses its flags and calls the API: the same text, the same JSON, the same verdict."""
    from torch_ref import api
    found = call(api)
    for json_flag, shown in (([], found.summary() + "\n"), (["--json"], None)):
        code = cli.main([*argv, *json_flag])
        out = capsys.readouterr().out
        assert code == (0 if found.ok else 1)
        if shown is not None:
            assert out == shown
        else:
            assert json.loads(out) == json.loads(json.dumps(found.to_json()))
