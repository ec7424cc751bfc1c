"""The per-time-step states of the recurrent modules in the lockstep (contract 3 of issue 13).

A result may carry "states" ({"layers.1.h": array, "layers.1.c": ...}, after forward) and
"grad_states" (the same keys: the total derivatives dE/dh_t, dE/dc_t), each of shape
(num_layers, num_directions, T, N, hidden_size): [l, d, t] is layer l, direction d's state after
time step t, t the position in the sequence for both directions. They are compared at their
module's place (verdict.pairs): stage forward, a module's states just before its output; stage
delta, a module's grad_states just after its output's delta.

A state tensor that fails is located at the time step where it first goes wrong in the order the
computation visits it (forward: layer by layer, direction 0 with t rising, then direction 1 with t
falling; backward: the reverse), each time step compared with the one comparison helper
(torch_ref/testing.py's compare), and worded "h at t = 7, layer 0, direction 0, sample 3, unit 5".
Attention weights, "attn" (N, num_heads, T, S) after softmax (forward only), are located at the
first query position that goes wrong (all queries are made at once: the lowest), worded
"attn at query 2, key 3, head 1, sample 0" (locate_attention).
"""
import numpy as np

from ..testing import compare

# the result's key of each stage's state tensors
STATE_KEYS = {"forward": "states", "delta": "grad_states"}


def owned(states, module):
    """The names in `states` ({"layers.1.h": ...}) of module `module`'s states ("layers.1"), in order."""
    return [name for name in states if name.rpartition(".")[0] == module]


def is_state(stage, name, r):
    """Whether the tensor `name` compared at `stage` is a state tensor of result `r`."""
    key = STATE_KEYS.get(stage)
    return key is not None and name in r.get(key, ())


def visit_order(shape, stage):
    """(layer, direction, t) of every time step of a state tensor of `shape` (L, D, T, ...), in the
    order the computation makes them (forward) or their gradients (delta: the reverse)."""
    layers, dirs, steps = shape[:3]
    order = [(l, d, t) for l in range(layers) for d in range(dirs)
             for t in (range(steps) if d == 0 else reversed(range(steps)))]
    return order if stage == "forward" else order[::-1]


def locate(stage, name, mv, rv, rtol, atol):
    """(Comparison of the first failing time step, the full index, its wording) of a state tensor
    that fails, or None when it cannot be placed (a shape other than (L, D, T, N, H), or attention
    weights' (N, heads, T, S): locate_attention)."""
    a, e = np.asarray(mv), np.asarray(rv)
    if a.shape == e.shape and e.ndim == 4:
        return locate_attention(name, a, e, rtol, atol)
    if a.shape != e.shape or e.ndim != 5:
        return None
    key = name.rpartition(".")[2]
    for l, d, t in visit_order(e.shape, stage):
        c = compare(a[l, d, t], e[l, d, t], rtol, atol)
        if not c.ok:
            n, h = c.index
            return c, (l, d, t, n, h), f"{key} at t = {t}, layer {l}, direction {d}, sample {n}, unit {h}"
    return None


def locate_attention(name, a, e, rtol, atol):
    """(Comparison, index, wording) of attention weights (N, heads, T, S) that fail, at the first
    query position t whose row goes wrong (lowest t; its worst element there), or None."""
    key = name.rpartition(".")[2]
    for t in range(e.shape[2]):
        c = compare(a[:, :, t], e[:, :, t], rtol, atol)
        if not c.ok:
            n, h, s = c.index
            return c, (n, h, t, s), f"{key} at query {t}, key {s}, head {h}, sample {n}"
    return None
