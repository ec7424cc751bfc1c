"""The README's ten lines, run as they are written (tests/test_docs.py checks that the README shows
them verbatim). `MyNet` is the complete example of docs/plugins.md (tests/test_example_user_test.py)."""
from test_example_user_test import MyNet  # noqa: F401  (the README's "your class")

from torch_ref import assert_lockstep


def test_my_backprop_matches_autograd_at_every_iteration():
    assert_lockstep({
        "network": {"sizes": [3, 4, 2], "activation": ["tanh", "identity"], "loss": "mse"},
        "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4}, "run": {"steps": 30},
    }, MyNet)  # your class: called with the parsed description, it returns the implementation
