"""Negative controls: break one formula of the manual engine and the lockstep must catch it at
iteration 0, at the stage where the broken value first appears, naming the tensor."""
import numpy as np
import pytest

import manual.activations
import manual.losses
import manual.modules
import manual.optim
from torch_ref import cli
from torch_ref.lockstep import lockstep

from conftest import SPECS, make_desc


def sigmoid_derivative_sign_flipped(self, grad_output):
    return -grad_output * self.out * (1.0 - self.out)


def sigmoid_derivative_missing_one_minus(self, grad_output):
    return grad_output * self.out


def tanh_derivative_missing(self, grad_output):
    return grad_output


def relu_mask_inverted(self, grad_output):
    return np.where(self.mask, 0.0, grad_output)


def weight_grad_transposed(self, grad_output, input_grad=True):
    self.weight.accumulate((grad_output.T @ self.x).T.reshape(self.weight.data.shape))
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output @ self.weight.data if input_grad else None


def bias_grad_first_sample_only(self, grad_output, input_grad=True):
    self.weight.accumulate(grad_output.T @ self.x)
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output[0])
    return grad_output @ self.weight.data if input_grad else None


def grad_input_uses_updated_nothing_but_ones(self, grad_output, input_grad=True):  # backprop through W of ones
    self.weight.accumulate(grad_output.T @ self.x)
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output @ np.ones_like(self.weight.data) if input_grad else None


def mse_grad_not_divided_by_n(self):
    return 2.0 * self.diff


def half_sse_loss_without_half(self, input, target):
    self.diff = input - target
    return np.sum(self.diff * self.diff)


def sgd_adds_gradient(self):
    for p in self.params:
        p.data += self.lr * p.grad


def linear_forward_without_bias(self, x):
    self.x = x
    return x @ self.weight.data.T


# (target, replacement, description, sizes, activation, loss, bias, expected stage, expected tensor)
BREAKS = [
    (manual.activations.Sigmoid, "backward", sigmoid_derivative_sign_flipped,
     [2, 2, 2], "sigmoid", "half-sse", "shared-frozen", "delta", "layers.1"),
    (manual.activations.Sigmoid, "backward", sigmoid_derivative_missing_one_minus,
     [3, 4, 2], "sigmoid", "mse", "per-neuron", "delta", "layers.1"),
    (manual.activations.Tanh, "backward", tanh_derivative_missing,
     [3, 4, 2], ["tanh", "identity"], "mse", "per-neuron", "delta", "layers.0"),
    (manual.activations.ReLU, "backward", relu_mask_inverted,
     [3, 6, 2], ["relu", "identity"], "mse", "per-neuron", "delta", "layers.0"),
    # a transposed weight gradient, on square layers, where the shapes cannot give it away
    (manual.modules.Linear, "backward", weight_grad_transposed,
     [3, 3, 3], "tanh", "mse", "none", "grad", "layers.1.weight"),
    (manual.modules.Linear, "backward", weight_grad_transposed,
     [2, 2, 2], "sigmoid", "half-sse", "shared-frozen", "grad", "layers.1.weight"),
    (manual.modules.Linear, "backward", bias_grad_first_sample_only,
     [3, 4, 2], "tanh", "mse", "per-neuron", "grad", "layers.1.bias"),
    (manual.modules.Linear, "backward", grad_input_uses_updated_nothing_but_ones,
     [3, 4, 2], "tanh", "mse", "none", "delta", "layers.0"),
    (manual.losses.MSELoss, "backward", mse_grad_not_divided_by_n,
     [3, 4, 2], "tanh", "mse", "per-neuron", "delta", "layers.1"),
    (manual.losses.HalfSSELoss, "forward", half_sse_loss_without_half,
     [2, 2, 2], "sigmoid", "half-sse", "shared-frozen", "loss", "loss"),
    (manual.optim.SGD, "step", sgd_adds_gradient,
     [3, 4, 2], "tanh", "mse", "per-neuron", "param", "layers.0.weight"),
    (manual.modules.Linear, "forward", linear_forward_without_bias,
     [3, 4, 2], "tanh", "mse", "per-neuron", "output", "output"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("target,attr,broken,sizes,act,loss,bias,stage,tensor", BREAKS,
                         ids=[b[2].__name__ for b in BREAKS])
def test_broken_formula_is_caught(monkeypatch, target, attr, broken, sizes, act, loss, bias,
                                  stage, tensor, dtype):
    monkeypatch.setattr(target, attr, broken)
    result = lockstep(make_desc(sizes, act, loss, bias, batch_size=3, steps=20, dtype=dtype))
    assert not result.ok
    m = result.first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, stage, tensor), str(m)
    assert m.abs_err > m.atol + m.rtol * abs(m.reference)
    text = str(m)
    for word in ("iteration 0", f"stage {stage!r}", f"tensor {tensor!r}", "manual =", "reference =",
                 "atol", "rtol"):
        assert word in text


def test_unbroken_engine_passes_the_same_table():
    """The control of the controls: every configuration above passes when nothing is broken."""
    for *_, sizes, act, loss, bias, _stage, _tensor in BREAKS:
        result = lockstep(make_desc(sizes, act, loss, bias, batch_size=3, steps=20))
        assert result.ok, str(result.first_mismatch)


def test_command_exits_1_naming_iteration_stage_and_tensor(monkeypatch, capsys):
    monkeypatch.setattr(manual.activations.Tanh, "backward", tanh_derivative_missing)
    code = cli.main(["run", str(SPECS / "four_layer_mixed.toml"), "--steps", "50"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out
    assert "iteration 0, stage 'delta', tensor 'layers.0'" in out
