"""Snapshots: a correct numpy implementation written the way numpy code is written (in-place
updates, live arrays, views, one result dict reused, keeping what it is given) gets the verdict of
one that copies everything, in every mode, across the chunk edges of the reference running ahead
(torch_ref.lockstep.loop.AHEAD_ITERATIONS = 64); and a bug planted at a chunk edge is found exactly there.

Without the guard's copies (torch_ref/implementation/plugin.py), such an implementation fails at an early
iteration with the values of a later one, and the verdict depends on --steps."""
import copy

import numpy as np
import pytest

import manual.data
import manual.trainer
from torch_ref import check
from torch_ref.description import spec
from torch_ref.lockstep.loop import AHEAD_ITERATIONS

from conftest import make_desc

STYLES = ["copies", "live", "views", "same-dict", "keeps-given", "keeps-x"]
STEPS = 2 * AHEAD_ITERATIONS + 2  # 130: crosses two chunk edges


def momentum_desc(dtype="float64"):
    """A 3-4-2 tanh MLP, MSE, SGD with momentum (an optimizer state updated in place), full batches."""
    desc = make_desc([3, 4, 2], "tanh", batch_size=4, n=12, steps=STEPS, dtype=dtype, lr=0.05)
    desc["optimizer"] = {**desc["optimizer"], "momentum": 0.9}
    return desc


class NumpyMLP:
    """The network of `momentum_desc` by hand, in numpy. `style`:

    copies       returns new arrays and keeps nothing it is given (the control);
    live         updates in place (W -= lr * buf, buf *= mu), computes into buffers it keeps
                 (np.matmul(..., out=)), and returns those live arrays;
    views        live, its weights stored (in, out) and returned as W.T (a view);
    same-dict    live, and returns the same result dict object at every step;
    keeps-given  live, and keeps (and updates in place) the very arrays given to load_state_dict
                 and load_optimizer_state;
    keeps-x      live, and keeps the first batch as its input buffer, later batches copied into it.

    `bug_at`: at that iteration, the gradient of layers.0.weight[0, 0] is off (before the update).
    """

    def __init__(self, desc, style="copies", bug_at=None):
        opt = desc["optimizer"]
        self.lr, self.mu = opt["lr"], opt["momentum"]
        self.style, self.bug_at, self.it = style, bug_at, 0
        self.n = len(desc["network"]["sizes"]) - 1
        self.bufs, self.grads, self.result, self.xbuf = {}, {}, None, None

    # parameters and optimizer state
    def load_state_dict(self, state):
        if self.style == "keeps-given":
            self.p = state  # kept, and updated in place below
        elif self.style == "views":
            self.p = {k: (np.array(v.T).T if v.ndim == 2 else np.array(v)) for k, v in state.items()}
        else:
            self.p = {k: np.array(v) for k, v in state.items()}

    def load_optimizer_state(self, flat):
        for name in self.p:
            key = f"{name}.momentum_buffer"
            if key in flat:
                self.bufs[name] = flat[key] if self.style == "keeps-given" else np.array(flat[key])

    def _into(self, key, value):
        """`value` in a buffer kept from step to step (live styles), or as it is (copies)."""
        if self.style == "copies":
            return value
        buf = self.grads.get(key)
        if buf is None or buf.shape != value.shape:
            buf = self.grads[key] = np.empty_like(value)
        buf[...] = value
        return buf

    def train_step(self, x, y):
        if self.style == "keeps-x":
            if self.xbuf is None or self.xbuf.shape != x.shape:
                self.xbuf = x  # kept: the next batches are copied into it
            else:
                self.xbuf[...] = x
            x = self.xbuf
        acts, nets = [x], []
        for k in range(self.n):
            nets.append(acts[-1] @ self.p[f"layers.{k}.weight"].T + self.p[f"layers.{k}.bias"])
            acts.append(self._into(f"a{k}", np.tanh(nets[-1])))
        out = acts[-1]
        loss = float(np.mean((out - y) ** 2))
        grad_out = 2.0 * (out - y) / out.size
        deltas, grads = {}, {}
        for k in reversed(range(self.n)):
            delta = self._into(f"d{k}", grad_out * (1.0 - acts[k + 1] ** 2))
            deltas[f"layers.{k}"] = delta
            grads[f"layers.{k}.weight"] = self._into(f"gw{k}", delta.T @ acts[k])
            grads[f"layers.{k}.bias"] = self._into(f"gb{k}", delta.sum(axis=0))
            grad_out = delta @ self.p[f"layers.{k}.weight"]
        if self.it == self.bug_at:
            g = grads["layers.0.weight"]
            g[0, 0] += 0.05 * (abs(g[0, 0]) + 1e-3)
        self.it += 1
        for name, g in grads.items():  # SGD with momentum, as torch: buf = g, then mu * buf + g
            if name not in self.bufs:
                self.bufs[name] = g.copy()
            elif self.style == "copies":
                self.bufs[name] = self.mu * self.bufs[name] + g
            else:
                self.bufs[name] *= self.mu
                self.bufs[name] += g
            if self.style == "copies":
                self.p[name] = self.p[name] - self.lr * self.bufs[name]
            else:
                self.p[name] -= self.lr * self.bufs[name]
        return self._result(out, loss, deltas, grads)

    def _result(self, out, loss, deltas, grads):
        fresh = self.style == "copies"
        values = {
            "output": out, "loss": loss, "deltas": deltas, "grads": grads,
            "state_dict": {k: v.copy() if fresh else v for k, v in self.p.items()},
            "optimizer_state": {f"{k}.momentum_buffer": v.copy() if fresh else v for k, v in self.bufs.items()},
        }
        if self.style != "same-dict":
            return values
        if self.result is None:
            self.result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
        for k, v in values.items():  # the same dict, and the same inner dicts, refilled
            if isinstance(v, dict):
                self.result[k].update(v)
            else:
                self.result[k] = v
        return self.result


MODES = [("free", "float64"), ("resync", "float64"), ("shadow", "float32")]


@pytest.mark.parametrize("mode,dtype", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("style", STYLES)
def test_a_correct_implementation_passes_however_it_holds_its_arrays(style, mode, dtype):
    desc = momentum_desc(dtype)
    result = check(desc, NumpyMLP(desc, style), mode=mode)
    assert result.ok and result.steps_checked == STEPS, result.summary()
    assert result.not_reported == [] and {"delta", "optim", "param"} <= set(result.stats)


# every style in every mode, the bug at the first iteration of a chunk (64) or the one after (65).
# By default each style once, in mode i % 3 (every mode twice, once at each edge): whether a style's
# arrays are copied in a mode is the passing table's, above, in full; here, that a bug is found at
# its edge. The other 12 under -m slow.
BUGS = [pytest.param(style, mode, dtype, AHEAD_ITERATIONS + (i + j) % 2, id=f"{style}-{mode}-at-{AHEAD_ITERATIONS + (i + j) % 2}",
                     marks=() if j == i % len(MODES) else pytest.mark.slow)
        for i, style in enumerate(STYLES) for j, (mode, dtype) in enumerate(MODES)]


@pytest.mark.parametrize("style,mode,dtype,bug_at", BUGS)
def test_a_bug_at_a_chunk_edge_is_found_exactly_there(style, mode, dtype, bug_at):
    desc = momentum_desc(dtype)
    result = check(desc, NumpyMLP(desc, style, bug_at=bug_at), mode=mode)
    m = result.first_mismatch
    assert not result.ok and m is not None, result.summary()
    assert (m.iteration, m.stage, m.name, m.index) == (bug_at, "grad", "layers.0.weight", (0, 0)), str(m)
    assert result.steps_checked == bug_at


def test_what_the_implementation_is_given_is_its_own():
    """The arrays handed to it (state, batches, the twin's state in resync) are never the
    lockstep's: an implementation that scribbles over all of them after use still passes."""
    desc = momentum_desc()
    inner = NumpyMLP(desc, "copies")

    class Scribbler:
        def load_state_dict(self, state):
            inner.load_state_dict(state)
            for v in state.values():
                v[...] = np.nan

        def load_optimizer_state(self, flat):
            inner.load_optimizer_state(flat)
            for v in flat.values():
                v[...] = np.nan

        def train_step(self, x, y):
            r = inner.train_step(x, y)
            x[...], y[...] = np.nan, np.nan
            return r
    for mode in ("free", "resync"):
        inner.__init__(desc, "copies")
        assert check(desc, Scribbler(), mode=mode).ok


@pytest.mark.parametrize("opt", [
    {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    {"name": "adam", "lr": 0.01},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
], ids=lambda o: o["name"])
@pytest.mark.parametrize("clip", [None, {"max_norm": 0.1}], ids=["no-clip", "clip-norm"])
def test_the_manual_engine_returns_new_arrays_at_every_step(opt, clip):
    """Why the manual engine is trusted without copies (plugin.Guard, Conformer(trusted=True)):
    every array of every result keeps the values it had when returned, after many more steps,
    while the lockstep holds the results (as it does, a chunk of iterations at a time)."""
    raw = {"network": {"sizes": [3, 5, 2], "activation": "tanh", "loss": "mse"}, "init": {"seed": 0},
           "optimizer": opt, "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4}, "run": {"steps": 12}}
    desc = spec.parse({**raw, "clip": clip} if clip else raw)
    trainer = manual.trainer.build(desc)
    held, snapshots = [], []
    batches = manual.data.batches(desc)
    for _ in range(12):
        r = trainer.train_step(*next(batches))
        held.append(r)
        snapshots.append(copy.deepcopy(r))
    for r, s in zip(held, snapshots):
        for key, value in s.items():
            if isinstance(value, dict):
                assert value.keys() == r[key].keys()
                for name, v in value.items():
                    assert np.array_equal(r[key][name], v), (key, name)
            else:
                assert np.array_equal(r[key], value), key
