"""--fd: central finite differences (manual/finite_differences.py, numpy, float64) as a third opinion on the
gradients, and the three-way verdict per parameter tensor."""
import json

import numpy as np
import pytest

import manual.data
import manual.init
import manual.trainer
from manual.batchnorm import BatchNorm2d
from manual.conv import Conv2d
from manual.finite_differences import NetworkLoss, central_differences
from torch_ref import check
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.twin.model import Twin
from torch_ref.testing import TOLERANCES, fd_tolerance, tolerance

from conftest import SPECS, make_desc
from test_plugin import Wrapped

WORKED = str(SPECS / "worked_example.toml")


def three_layer(dtype="float64"):
    return make_desc([4, 6, 5, 3], ["tanh", "sigmoid", "identity"], "mse", batch_size=4, steps=4, dtype=dtype)


# --- the differences themselves, against values computed without them -------------------------

def test_differences_of_a_linear_layer_equal_the_closed_form():
    """E = mean((x W^T + b - y)^2) is quadratic in W and b: the central difference is exact but for
    rounding, and the closed form 2/(N C) (out - y)^T x is computed here independently."""
    desc = make_desc([3, 2], "identity", "mse", n=5, batch_size=5)
    state = manual.init.initial_state(desc)
    x, y = manual.data.dataset(desc)
    fd, passes = central_differences(desc, state, x, y, ["layers.0.weight", "layers.0.bias"])
    r = x @ state["layers.0.weight"].T + state["layers.0.bias"] - y  # (5, 2)
    np.testing.assert_allclose(fd["layers.0.weight"], 2 / r.size * r.T @ x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fd["layers.0.bias"], 2 / r.size * r.sum(0), rtol=1e-9, atol=1e-12)
    assert passes == 2 * (6 + 2)


def test_differences_reproduce_the_seeds_printed_gradients(worked):
    x, y = manual.data.dataset(worked)
    fd, _ = central_differences(worked, manual.init.initial_state(worked), x, y,
                                ["layers.0.weight", "layers.1.weight"])
    assert round(fd["layers.1.weight"][0, 0], 9) == 0.082167041  # the seed's dE/dw5
    assert round(fd["layers.0.weight"][0, 0], 9) == 0.000438568  # the seed's dE/dw1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fd_allowance_grows_with_the_loss_and_is_never_tighter_than_the_dtype(dtype):
    """Central differences of a loss L carry an error that scales with |L|: the absolute allowance
    scales with it (above |L| = 1), the relative one does not, and neither is below the dtype's."""
    rtol, atol = tolerance(dtype)
    r1, a1 = fd_tolerance(dtype, 1.0)
    r2, a2 = fd_tolerance(dtype, -1000.0)
    assert r1 >= rtol and a1 >= atol and r2 == r1
    assert a2 == max(atol, 1000 * TOLERANCES["finite-differences"]["atol"]) and a2 >= a1
    assert fd_tolerance(dtype, 0.001) == (r1, a1)  # below |L| = 1, no tighter than at 1
    assert fd_tolerance("float64", 1.0)[0] <= 1e-6  # tight enough for a gradient off by 1e-5 (below)


# --- three-way agreement on the worked example and a 3-layer network ---------------------------

@pytest.mark.parametrize("name,desc_fn,n_params", [
    ("worked example", lambda: spec.load(WORKED), 8),
    ("3-layer", three_layer, 4 * 6 + 6 + 6 * 5 + 5 + 5 * 3 + 3),
    ("3-layer float32", lambda: three_layer("float32"), 4 * 6 + 6 + 6 * 5 + 5 + 5 * 3 + 3),
])
def test_all_three_agree(name, desc_fn, n_params):
    result = check(desc_fn(), steps=4, fd_steps=3)
    assert result.ok, result.summary()
    fd = result.fd.to_json()
    assert fd["ok"] and fd["warnings"] == [] and fd["iterations_checked"] == 3
    assert fd["forward_passes"] == 3 * 2 * n_params  # the cost: 2 forward passes per parameter
    assert len(fd["rows"]) == 3 * len(fd["tensors"])
    bound = 1e-6 if "float32" in name else 1e-8  # float32 gradients are float32-accurate only
    for tensor, t in fd["tensors"].items():
        assert t["verdict"] == "agree", (tensor, t)
        assert t["impl_vs_fd"]["max_abs_err"] <= bound, (tensor, t)
        assert t["autograd_vs_fd"]["max_abs_err"] <= bound, (tensor, t)


def test_fd_json_from_the_command(capsys):
    assert cli.main(["run", WORKED, "--steps", "5", "--fd", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fd"]["steps"] == 3 and out["fd"]["iterations_checked"] == 3
    assert set(out["fd"]["tensors"]) == {"layers.0.weight", "layers.1.weight"}  # biases are frozen
    assert {r["iteration"] for r in out["fd"]["rows"]} == {0, 1, 2}
    assert cli.main(["run", WORKED, "--steps", "5", "--fd-steps", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fd"]["iterations_checked"] == 2
    assert cli.main(["run", WORKED, "--steps", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fd"] is None


def test_fd_steps_must_be_positive(capsys):
    assert cli.main(["run", WORKED, "--fd-steps", "0"]) == 2
    assert capsys.readouterr().err.startswith("backprop-check: error: --fd-steps:")


# --- the verdicts: which side is wrong ----------------------------------------------------------

def scaled(name, factor):
    def edit(it, r):
        return {**r, "grads": {**r["grads"], name: r["grads"][name] * factor}}
    return edit


def test_implementation_wrong_by_one_part_in_100000():
    desc = three_layer()
    result = check(desc, Wrapped(desc, scaled("layers.1.weight", 1 + 1e-5)), fd_steps=2)
    m = result.first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, "grad", "layers.1.weight")
    verdicts = {k: t["verdict"] for k, t in result.fd.tensors().items()}
    assert verdicts.pop("layers.1.weight") == "implementation wrong"
    assert set(verdicts.values()) == {"agree"}


def test_reference_wrong(monkeypatch):
    train_step = Twin.train_step

    def wrong_twin(self, x, y):
        r = train_step(self, x, y)
        r["grads"]["layers.0.bias"] = r["grads"]["layers.0.bias"] * 1.001
        return r
    monkeypatch.setattr(Twin, "train_step", wrong_twin)
    result = check(three_layer(), fd_steps=1)
    assert not result.ok
    assert result.fd.tensors()["layers.0.bias"]["verdict"] == "reference wrong"


# A ReLU whose input is exactly 0 for the only sample: 0.3·1 + 0.3·(−1) + 0 = 0. There autograd
# (and any implementation using the subgradient 0) says dE/dW = 0; the central difference sees
# half of the one-sided slope. The code is right; the description sits on a kink.
KINK = {
    "network": {"sizes": [2, 2, 1], "activation": ["relu", "identity"], "bias": "per-neuron", "loss": "mse"},
    "init": {"weights": [[[1.0, -1.0], [0.5, 0.25]], [[1.0, 2.0]]], "biases": [[0.0, 0.1], [0.0]]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "data": {"x": [[0.3, 0.3]], "y": [[1.0]], "batch_size": 1},
    "run": {"steps": 3},
}


def test_description_suspect_is_said_loudly(tmp_path, capsys):
    f = tmp_path / "kink.json"
    f.write_text(json.dumps(KINK))
    assert cli.main(["run", str(f)]) == 0  # implementation and autograd agree
    capsys.readouterr()
    assert cli.main(["run", str(f), "--fd", "--fd-steps", "1"]) == 1
    text = capsys.readouterr().out
    assert "PASS: 3 iteration(s)" in text
    assert "!!! layers.0.weight: DESCRIPTION SUSPECT at iteration 0: the implementation and autograd " \
           "agree with each other but NOT with finite differences" in text
    assert "not at the code" in text
    assert text.rstrip().endswith("three-way verdict: NOT AGREED (exit code 1 with --fd, even where the lockstep passed)")
    assert cli.main(["run", str(f), "--fd-steps", "1", "--json"]) == 1
    fd = json.loads(capsys.readouterr().out)["fd"]
    assert fd["ok"] is False
    assert fd["tensors"]["layers.0.weight"]["verdict"] == "description suspect"
    assert fd["tensors"]["layers.0.bias"]["verdict"] == "description suspect"
    assert fd["tensors"]["layers.1.weight"]["verdict"] == "agree"
    # out = relu(net_h0)·1 + relu(0.325)·2 = 0.65, dE/dout = 2(0.65 − 1) = −0.7: to the right of the
    # kink dE/db0[0] = −0.7, to the left 0; the central difference sees half of it
    worst = fd["tensors"]["layers.0.bias"]["worst"]
    assert worst["index"] == [0] and worst["impl"] == worst["autograd"] == 0.0
    assert worst["fd"] == pytest.approx(-0.35, abs=1e-5)
    assert "(at index (0,): implementation 0.0, autograd 0.0, finite differences -0.3499" in text


def test_fd_on_the_three_layer_spec_from_the_command(capsys):
    """The README's second demonstration: a 3-layer mini-batch network, every tensor agreeing."""
    args = ["run", str(SPECS / "three_layer_minibatch.toml"), "--steps", "3", "--fd", "--json"]
    assert cli.main(args) == 0
    fd = json.loads(capsys.readouterr().out)["fd"]
    assert fd["ok"] and fd["forward_passes"] == 3 * 2 * (3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2)
    assert {t: v["verdict"] for t, v in fd["tensors"].items()} == {
        f"layers.{k}.{p}": "agree" for k in range(3) for p in ("weight", "bias")}


@pytest.mark.parametrize("clip", [{"max_norm": 0.05}, {"max_norm": 0.05, "norm_type": "inf"}, {"clip_value": 0.01}])
def test_fd_follows_the_descriptions_gradient_clipping(clip):
    raw = {"network": {"sizes": [4, 6, 3], "activation": "tanh", "loss": "mse"}, "init": {"seed": 0},
           "optimizer": {"name": "sgd", "lr": 0.1}, "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4},
           "clip": clip, "run": {"steps": 2}}
    result = check(raw, fd_steps=2)
    assert result.ok and result.fd.ok, result.summary()
    desc = spec.parse(raw)
    x, y = next(manual.data.batches(desc))
    names = ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    unclipped, _ = central_differences({**desc, "clip": None}, manual.init.initial_state(desc), x, y, names)
    clipped, _ = central_differences(desc, manual.init.initial_state(desc), x, y, names)
    assert any(not np.allclose(unclipped[n], clipped[n]) for n in names)  # the clipping was active


# --- layer lists: dropout masks fixed, batch norm in training mode, its buffers untouched ------

def shipped(name, batch_size=None, steps=3):
    """A shipped layer list (a smaller batch for the default profile's cheap version)."""
    desc = spec.override(spec.load(str(SPECS / f"{name}.toml")), steps=steps)
    if batch_size:
        desc["data"]["batch_size"] = batch_size
    return desc


@pytest.mark.parametrize("name", ["lenet", "batchnorm_mlp", "residual", "dropout"])
def test_a_shipped_layer_list_agrees_three_ways(name):
    """Every parameter of every shipped layer list: implementation, autograd and differences agree
    (dropout's differences taken with other masks, or batch norm's in eval mode, would not)."""
    result = check(shipped(name, batch_size=2, steps=2), fd_steps=1)
    assert result.ok and result.fd.ok, result.summary()
    assert set(result.fd.tensors()) == set(manual.trainer.build(shipped(name)).trained)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet", "batchnorm_mlp", "residual", "dropout"])
def test_a_shipped_layer_list_agrees_three_ways_as_shipped(name):
    result = check(shipped(name, steps=4), fd_steps=3)
    assert result.ok and result.fd.ok and result.fd.to_json()["iterations_checked"] == 3, result.summary()


TINY_CONV = {
    "network": {"input_shape": [1, 5, 5], "loss": "cross_entropy", "layers": [
        {"type": "Conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "BatchNorm2d"}, {"type": "Tanh"},
        {"type": "Flatten"}, {"type": "Linear", "out_features": 3}]},
    "init": {"seed": 3}, "optimizer": {"name": "sgd", "lr": 0.1},
    "data": {"random": {"n": 8, "seed": 4}, "batch_size": 4}, "run": {"steps": 2},
}


def grad_scaled(cls, factor):
    """`cls` whose backward leaves its weight's gradient `factor` times too large."""
    class Scaled(cls):
        def backward(self, grad_output):
            before = None if self.weight.grad is None else self.weight.grad.copy()
            grad_input = super().backward(grad_output)
            added = self.weight.grad - (0 if before is None else before)
            self.weight.grad += (factor - 1) * added
            return grad_input
    return Scaled


@pytest.mark.parametrize("cls,tensor", [(Conv2d, "layers.0.weight"), (BatchNorm2d, "layers.1.weight")])
def test_a_planted_gradient_error_in_a_layer_is_the_implementations(cls, tensor):
    desc = spec.parse(TINY_CONV)
    result = check(desc, manual.trainer.Trainer(desc, {cls: grad_scaled(cls, 1 + 1e-4)}), fd_steps=1)
    assert (result.first_mismatch.stage, result.first_mismatch.name) == ("grad", tensor)
    verdicts = {name: t["verdict"] for name, t in result.fd.tensors().items()}
    assert verdicts.pop(tensor) == "implementation wrong"
    assert set(verdicts.values()) == {"agree"}


def test_the_differences_leave_a_layer_lists_running_statistics_as_given():
    """Each evaluation starts from the given buffers: a forward in training mode updates them, and
    the next evaluation (or the run) must not see that update."""
    desc = shipped("batchnorm_mlp")
    state = manual.init.initial_state(desc)
    state["layers.1.running_mean"] = np.full(16, 0.5)
    loss = NetworkLoss(desc)
    loss.load_state_dict(state)
    x, y = next(manual.data.batches(desc))
    first = loss(x, y)
    assert loss(x, y) == first
    for name, value in loss.buffers.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
