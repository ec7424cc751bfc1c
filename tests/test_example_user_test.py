"""Checking your own backprop in your own tests: a complete example (README.md shows this file).

Run it with `python -m pytest tests/test_example_user_test.py`.
"""
import numpy as np
import pytest

from torch_ref import assert_lockstep

# The network to check, as a description (a .toml/.json path works the same way).
DESCRIPTION = {
    "network": {"sizes": [3, 4, 2], "activation": ["tanh", "identity"], "bias": "per-neuron", "loss": "mse"},
    "init": {"seed": 0},                                   # torch.nn.Linear's default init, seeded
    "optimizer": {"name": "sgd", "lr": 0.1},
    "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4},
    "run": {"steps": 30, "dtype": "float64"},
}


class MyNet:
    """Your implementation: a hidden tanh layer, a linear output, mean squared error, plain SGD.

    The factory (the class itself here) receives the parsed description; the cross-check loads the
    initial parameters with load_state_dict and calls train_step(x, y) once per iteration.
    """

    def __init__(self, desc):
        self.lr = desc["optimizer"]["lr"]

    def load_state_dict(self, state):
        self.p = {name: np.array(value, dtype=np.float64) for name, value in state.items()}

    def train_step(self, x, y):
        W1, b1, W2, b2 = (self.p[k] for k in ("layers.0.weight", "layers.0.bias",
                                              "layers.1.weight", "layers.1.bias"))
        h = np.tanh(x @ W1.T + b1)                       # (N, 4)
        out = h @ W2.T + b2                              # (N, 2)
        loss = np.mean((out - y) ** 2)
        delta2 = 2.0 * (out - y) / out.size              # dE/dnet of the output layer
        delta1 = self.hidden_delta(delta2, W2, h)        # dE/dnet of the hidden layer
        grads = {"layers.0.weight": delta1.T @ x, "layers.0.bias": delta1.sum(0),
                 "layers.1.weight": delta2.T @ h, "layers.1.bias": delta2.sum(0)}
        self.p = {k: v - self.lr * grads[k] for k, v in self.p.items()}
        return {"output": out, "loss": loss,             # required
                "grads": grads, "state_dict": self.p,    # required
                "deltas": {"layers.0": delta1, "layers.1": delta2}}  # optional

    def hidden_delta(self, delta2, W2, h):
        return (delta2 @ W2) * (1.0 - h ** 2)            # tanh' = 1 - tanh^2


def test_my_backprop_matches_autograd_at_every_iteration():
    assert_lockstep(DESCRIPTION, MyNet)


def test_my_gradients_agree_with_finite_differences():
    assert_lockstep(DESCRIPTION, MyNet, steps=3, fd_steps=2)


class MyNetForgettingTanhDerivative(MyNet):
    """A classic mistake, to see what a failure looks like."""

    def hidden_delta(self, delta2, W2, h):
        return delta2 @ W2                               # tanh' forgotten


def test_a_mistake_fails_with_the_full_report():
    with pytest.raises(AssertionError) as failure:
        assert_lockstep(DESCRIPTION, MyNetForgettingTanhDerivative)
    report = str(failure.value)                          # what pytest prints
    assert "iteration 0, stage 'delta', tensor 'layers.0'" in report
    assert "worst element at index" in report and "rtol" in report
