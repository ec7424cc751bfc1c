"""A layer list whose first module has no parameters (Flatten, LastStep, an activation, Dropout,
pooling first): the twin's delta of that module is autograd's dE/dy0, not zero, so a correct
implementation passes from iteration 0, and a wrong delta at that module is still caught there."""
import numpy as np
import pytest
import torch

import manual.trainer
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep

torch.set_num_threads(1)

LINEAR = {"type": "Linear", "out_features": 3}
FIRST = [  # (id, input_shape, layers)
    ("Flatten", [2, 3], [{"type": "Flatten"}, LINEAR]),
    ("LastStep", [4, 3], [{"type": "LastStep"}, LINEAR]),
    ("Tanh", [5], [{"type": "Tanh"}, LINEAR]),
    ("ReLU then Flatten", [2, 3], [{"type": "ReLU"}, {"type": "Flatten"}, LINEAR]),
    ("Dropout", [5], [{"type": "Dropout", "p": 0.5}, LINEAR]),
    ("MaxPool2d", [1, 4, 4], [{"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"}, LINEAR]),
]


def described(input_shape, layers, steps=3):
    return spec.parse({"network": {"input_shape": input_shape, "layers": layers, "loss": "mse"},
                       "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
                       "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4}, "run": {"steps": steps}})


@pytest.mark.parametrize("shape,layers", [c[1:] for c in FIRST], ids=[c[0] for c in FIRST])
def test_a_parameterless_first_module_passes_with_its_real_delta(shape, layers):
    desc = described(shape, layers)
    result = lockstep(desc)
    assert result.ok, result.summary()
    assert {"delta", "grad", "param"} <= set(result.stats) and result.steps_checked == 3


class WrongFirstDelta(manual.trainer.Trainer):
    """The manual engine with the first module's delta doubled: a backprop mistake at layers.0."""

    def train_step(self, x, y, **kw):
        r = super().train_step(x, y, **kw)
        r["deltas"]["layers.0"] = 2 * np.asarray(r["deltas"]["layers.0"])
        return r


@pytest.mark.parametrize("shape,layers", [c[1:] for c in FIRST], ids=[c[0] for c in FIRST])
def test_a_wrong_delta_of_the_first_module_is_caught_there(shape, layers):
    desc = described(shape, layers)
    result = lockstep(desc, impl=WrongFirstDelta(desc))
    assert not result.ok
    assert (result.first_mismatch.iteration, result.first_mismatch.stage, result.first_mismatch.name) == (0, "delta", "layers.0"), result.summary()
