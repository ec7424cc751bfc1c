"""Parameter.grad across steps, against torch.nn.Linear's: set_to_none, accumulation, and the reuse
of a released gradient's storage (manual.modules.Parameter.accumulate_matmul).

Each case runs a short script of steps on a manual Linear and a torch Linear with the same
weights and batches, then checks every gradient the script kept against torch's gradient of the
same moment (kept as a clone), and whether the manual side reused storage where it should. Like
torch's AccumulateGrad, a gradient someone still holds is never written to: neither by the next
accumulation nor as storage for the gradient after zero_grad()."""
import numpy as np
import pytest
import torch

from manual.modules import Linear
from torch_ref.testing import compare, tolerance

# (id, script, whether the last gradient must sit in the storage of the first)
#   "zero": zero_grad()   "back": forward + backward on the next batch   "keep": hold on to grad
CASES = [
    ("released-storage-is-reused", ["back", "zero", "back"], True),
    ("a-kept-gradient-keeps-its-values", ["back", "keep", "zero", "back"], False),
    ("accumulation-without-zero_grad", ["back", "back", "back"], True),
    ("kept-then-accumulated", ["back", "keep", "back"], False),
    ("kept-then-accumulated-twice", ["back", "keep", "back", "back"], False),
    ("three-steps-released", ["back", "zero", "back", "zero", "back"], True),
]


def _address(a):
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("name,script,reused", CASES, ids=[c[0] for c in CASES])
def test_gradient_storage_follows_torch(name, script, reused):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    layer = Linear(4, 3)
    layer.weight.data[...], layer.bias.data[...] = w, b
    ref = torch.nn.Linear(4, 3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w))
        ref.bias.copy_(torch.from_numpy(b))
    rtol, atol = tolerance("float64")
    kept, first_address = [], None
    for op in script:
        if op == "zero":
            layer.weight.zero_grad()
            ref.zero_grad(set_to_none=True)
        elif op == "keep":
            kept.append((layer.weight.grad, ref.weight.grad.clone()))
        else:
            x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
            layer.forward(x)
            layer.backward(g, input_grad=False)
            ref(torch.from_numpy(x)).backward(torch.from_numpy(g))
            first_address = first_address or _address(layer.weight.grad)
    kept.append((layer.weight.grad, ref.weight.grad.clone()))
    for mine, theirs in kept:
        c = compare(mine, theirs.numpy(), rtol, atol)
        assert c.ok, (name, c)
    assert (_address(layer.weight.grad) == first_address) == reused
