"""The measured limit of a numpy training step: bench.py's cases 2 and 3 written as one function.

A multilayer perceptron (ReLU between layers, none after the last), mean-squared error, SGD: the
step the manual engine takes on those cases, with every buffer allocated once and every pass made
once, in place, where numpy allows it:

    forward    Y_k = A_{k-1} @ W_k.T;  Y_k += b_k;  A_k = max(Y_k, 0) in place (k < last)
    loss       D = out − y;  E = (D·D)/n;  D *= 2/n                      n = N·C
    backward   G_k = D_k.T @ A_{k-1};  g_k = Σ_rows D_k;  D_{k-1} = (D_k @ W_k) ⊙ [A_{k-1} > 0]
    update     W_k −= γ G_k;  b_k −= γ g_k   (through a scratch buffer: numpy has no fused a·x + y)

It computes what the manual step computes (tests/test_bench.py holds its parameters after some
steps to the manual engine's), nothing more: no module objects, no Python between the passes but
the loop over layers. Its time over the bare products' is what numpy's own elementwise passes cost
on this machine (they run on one core; the products' on all), the limit the engine is measured against.
"""
import numpy as np


class FloorMLP:
    def __init__(self, state, batch, lr, dtype=np.float32):
        """`state`: {"layers.{k}.weight": (out, in), "layers.{k}.bias": (out,)} (the run's start)."""
        n = len(state) // 2
        self.weight = [np.array(state[f"layers.{k}.weight"], dtype=dtype) for k in range(n)]
        self.bias = [np.array(state[f"layers.{k}.bias"], dtype=dtype) for k in range(n)]
        self.lr = lr
        outs = [w.shape[0] for w in self.weight]
        self.out = [np.empty((batch, o), dtype) for o in outs]            # Y_k, then A_k in place
        self.delta = [np.empty((batch, o), dtype) for o in outs]          # D_k = dE/dY_k
        self.grad_x = [np.empty((batch, w.shape[1]), dtype) for w in self.weight]  # D_k @ W_k
        self.mask = [np.empty((batch, o), bool) for o in outs]            # [A_k > 0]
        self.grad_weight = [np.empty_like(w) for w in self.weight]
        self.grad_bias = [np.empty_like(b) for b in self.bias]
        self.scratch = [np.empty_like(w) for w in self.weight]            # γ G_k
        self.scratch_bias = [np.empty_like(b) for b in self.bias]

    def step(self, x, y):
        """One training step on (x, y); returns the loss before the update."""
        last = len(self.weight) - 1
        a = x
        for k, (w, b, out) in enumerate(zip(self.weight, self.bias, self.out)):
            np.matmul(a, w.T, out=out)
            out += b
            if k < last:
                np.maximum(out, 0, out=out)
            a = out
        d = np.subtract(a, y, out=self.delta[last])
        loss = np.vdot(d, d) / d.size
        d *= 2.0 / d.size
        for k in range(last, -1, -1):
            inp = x if k == 0 else self.out[k - 1]
            np.matmul(self.delta[k].T, inp, out=self.grad_weight[k])
            np.add.reduce(self.delta[k], axis=0, out=self.grad_bias[k])
            if k:
                np.matmul(self.delta[k], self.weight[k], out=self.grad_x[k])
                np.greater(inp, 0, out=self.mask[k - 1])
                np.multiply(self.grad_x[k], self.mask[k - 1], out=self.delta[k - 1])
        for w, g, s in zip(self.weight + self.bias, self.grad_weight + self.grad_bias, self.scratch + self.scratch_bias):
            np.subtract(w, np.multiply(g, self.lr, out=s), out=w)
        return loss
