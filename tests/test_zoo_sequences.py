"""Where the lockstep places a wrong attention weight (lockstep/states.py's locate_attention): the
first query position that goes wrong, worded "attn at query t, key s, head h, sample n", so that an
attention mistake's entry can name it once the weights are compared. (The sequence mistakes
themselves: tests/test_mistakes.py runs every entry, tests/test_zoo.py the command.)"""
import numpy as np
import pytest
import torch

from torch_ref.lockstep.checker import Checker
from torch_ref.lockstep.states import locate
from torch_ref.testing import tolerance

torch.set_num_threads(1)
F64 = tolerance("float64")
N, HEADS, T = 3, 2, 5


def results(seed=0):
    """A pair of identical results of a layer list whose layers.0 is a MultiheadAttention reporting
    its weights (N, heads, T, T) as the state "layers.0.attn"."""
    rng = np.random.default_rng(seed)
    r = {"forward": {"layers.0": rng.standard_normal((N, T, 4)), "layers.1": rng.standard_normal((N, 2))},
         "states": {"layers.0.attn": rng.random((N, HEADS, T, T))},
         "output": rng.standard_normal((N, 2)), "loss": 1.0,
         "deltas": {"layers.0": rng.standard_normal((N, T, 4)), "layers.1": rng.standard_normal((N, 2))},
         "grad_states": {}, "grads": {"layers.0.in_proj_weight": rng.standard_normal((12, 4))},
         "state_dict": {"layers.0.in_proj_weight": rng.standard_normal((12, 4))}, "buffers": ()}
    m = {k: ({n: a.copy() for n, a in v.items()} if isinstance(v, dict) else v) for k, v in r.items()}
    return m, r


# ([planted (n, head, query, key)], the one reported): the lowest query, whatever the size
PLANTED = [
    ([(2, 1, 3, 1), (0, 0, 1, 0)], (0, 0, 1, 0)),
    ([(1, 1, 4, 4), (2, 0, 4, 2)], (2, 0, 4, 2)),  # one query: its worst element (the later, larger)
    ([(0, 1, 0, 3), (1, 0, 2, 2)], (0, 1, 0, 3)),
]


@pytest.mark.parametrize("planted,reported", PLANTED, ids=str)
def test_a_wrong_attention_weight_is_placed_at_its_first_query(planted, reported):
    m, r = results()
    for k, index in enumerate(planted):
        m["states"]["layers.0.attn"][index] += 0.1 * (1 + k)  # the later one larger
    first = Checker(m, r, *F64).check(0, m, r)
    assert (first.stage, first.name, first.n_bad) == ("forward", "layers.0.attn", len(planted))
    n, h, t, s = reported
    assert first.index == reported and first.at == f"attn at query {t}, key {s}, head {h}, sample {n}"
    assert first.manual == m["states"]["layers.0.attn"][reported]
    assert first.reference == r["states"]["layers.0.attn"][reported]


def test_attention_weights_are_compared_before_the_modules_output_and_a_nan_row_is_placed():
    """A row that is NaN on one side only (a fully masked query) is wrong at that query."""
    m, r = results()
    m["states"]["layers.0.attn"][1, 0, 2] = np.nan
    m["forward"]["layers.0"][0, 0, 0] += 1.0  # the output is wrong too, but compared after
    first = Checker(m, r, *F64).check(0, m, r)
    assert first.name == "layers.0.attn" and first.at.startswith("attn at query 2, key ")
    assert first.at.endswith(", head 0, sample 1")


def test_a_state_of_another_shape_is_not_placed():
    a = np.zeros((2, 3, 4))
    assert locate("forward", "layers.0.attn", a, a + 1, *F64) is None
    assert locate("forward", "layers.0.attn", np.zeros((1, 2, 3, 3)), np.ones((1, 2, 3, 4)), *F64) is None
    assert locate("forward", "layers.0.attn", np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3)), *F64) is None
