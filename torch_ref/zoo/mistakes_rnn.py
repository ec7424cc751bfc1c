"""The zoo's classic mistakes in recurrent modules, as subclasses of manual/rnn.py's LSTM and GRU
(tests/test_mistakes_rnn.py shows where each first differs from torch, and that the correct
module does not):

    LSTMGateOrder            the gate blocks read as (i, f, o, g): torch's g rows used as o and
                             its o rows as g                     forward: output (h) at t = 0
    LSTMNoCellGradient       dE/dc_{t−1} takes only the h path (the dc ⊙ f term dropped)
                                                                 backward: c at t = T − 2
    LSTMForgetDerivative     the forget gate's σ' omitted: da_f = dc ⊙ c_{t−1}
                                                                 backward: h at t = T − 2
    LSTMTruncatedBPTT        the loop stops one step early: dE/dh at t = 0 (the last step the
                             backward reaches) misses the recurrence
                                                                 backward: h at t = 0
    LSTMStateNotDetached     stateful, the graph not cut: backward of batch 2 also runs back
                             through batch 1's kept caches from dE/dh_0, adding batch 1's share
                             into the parameters' gradients      grad: the parameters, batch 2
    GRUResetBeforeProduct    n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
                             (r applied before the product)      forward: output at t = 0 (with bias)

Each is the engine's code with the one mistake: a hook of the cell overridden (manual/rnn_cells.py:
carry_c, forget_derivative, carry_h), or the parameters' gate blocks swapped around the engine's
own forward and backward. GRUResetBeforeProduct changes the forward only; its backward is the
engine's formula evaluated at the mistaken forward's values (the forward is where it is caught).
Not yet entries of the mistake registry (torch_ref/zoo/mistakes.py): plug-in classes only.
"""
from contextlib import contextmanager

import numpy as np

from manual.rnn import GRU, LSTM
from manual.rnn_cells import GRUTimeLoop, LSTMTimeLoop, gate, sigmoid_inplace


# --- gate order ------------------------------------------------------------------------------------

def swap_blocks(a, hidden):
    """a with gate blocks 2 and 3 (LSTM's g and o) exchanged along axis 0, in place."""
    g, o = a[2 * hidden:3 * hidden].copy(), a[3 * hidden:4 * hidden].copy()
    a[2 * hidden:3 * hidden], a[3 * hidden:4 * hidden] = o, g


class LSTMGateOrder(LSTM):
    """The gates read as (i, f, o, g) from torch's (i, f, g, o) layout."""

    @contextmanager
    def _swapped(self, grads=False):
        arrays = [p.data for p in self._params.values()]
        if grads:
            arrays += [p.grad for p in self._params.values() if p.grad is not None]
        for a in arrays:
            swap_blocks(a, self.hidden_size)
        try:
            yield
        finally:
            arrays = [p.data for p in self._params.values()]
            if grads:
                arrays += [p.grad for p in self._params.values() if p.grad is not None]
            for a in arrays:
                swap_blocks(a, self.hidden_size)

    def forward(self, input, hx=None):
        with self._swapped():
            return super().forward(input, hx)

    def backward(self, grad_output, grad_h_n=None, input_grad=True):
        with self._swapped(grads=True):
            return super().backward(grad_output, grad_h_n, input_grad)


# --- the backward loop's hooks ----------------------------------------------------------------------

class NoCellGradientCell(LSTMTimeLoop):
    def carry_c(self, dc, f):
        return np.zeros_like(dc)  # dE/dc_{t−1} from the h path only


class ForgetDerivativeCell(LSTMTimeLoop):
    def forget_derivative(self, f):
        return np.ones_like(f)  # σ' omitted


class TruncatedCell(LSTMTimeLoop):
    def carry_h(self, dh_prev, k, steps):
        # `for k in range(steps - 1)`: the step the loop reaches last gets no recurrence
        return np.zeros_like(dh_prev) if k == steps - 2 else dh_prev


class LSTMNoCellGradient(LSTM):
    def make_cell(self):
        return NoCellGradientCell()


class LSTMForgetDerivative(LSTM):
    def make_cell(self):
        return ForgetDerivativeCell()


class LSTMTruncatedBPTT(LSTM):
    def make_cell(self):
        return TruncatedCell()


# --- the carried state, graph not cut --------------------------------------------------------------

class LSTMStateNotDetached(LSTM):
    """Carries h_n, c_n and keeps the previous batch's caches: its backward continues from
    dE/dh_0, dE/dc_0 into batch 1, adding that batch's share to the parameters' gradients."""

    def forward_in_list(self, x):
        carried = self.carry and self._fits(x) and self._runs
        self._previous = self._runs if carried else None
        return super().forward_in_list(x)

    def backward_in_list(self, grad_output):
        grad_input = super().backward_in_list(grad_output)
        if self._previous:
            kept = self._runs, self._grads, self.grad_hx
            self._runs = self._previous
            t, n = self._runs[0].x.shape[:2]
            zeros = np.zeros((n, t) if self.batch_first else (t, n), grad_input.dtype)
            self.backward(np.zeros(zeros.shape + (self.num_directions * self.hidden_size,), zeros.dtype),
                          self.grad_hx, input_grad=False)
            self._runs, self._grads, self.grad_hx = kept
        return grad_input


# --- the GRU's reset gate ----------------------------------------------------------------------------

class ResetBeforeProductCell(GRUTimeLoop):
    """n = tanh(x W_inᵀ + b_in + (r ⊙ h_{t−1}) W_hnᵀ + b_hn)."""

    def forward(self, run, w_hh, b_hh):
        hid, h, g = run.hidden, run.h, run.gates
        run.hn = np.empty_like(g)
        with np.errstate(over="ignore"):
            for t in run.steps:
                p, q, a, hn = t + 1 - run.off, t + run.off, g[t], run.hn[t]
                hn[:] = h[p] @ w_hh.T + (0 if b_hh is None else b_hh)
                a[:, :2 * hid] += hn[:, :2 * hid]
                r, z, n = (gate(a, k, hid) for k in range(3))
                sigmoid_inplace(a[:, :2 * hid])
                n += (r * h[p]) @ w_hh[2 * hid:].T + (0 if b_hh is None else b_hh[2 * hid:])
                np.tanh(n, out=n)
                h[q] = (h[p] - n) * z + n


class GRUResetBeforeProduct(GRU):
    def make_cell(self):
        return ResetBeforeProductCell()


MISTAKES = (LSTMGateOrder, LSTMNoCellGradient, LSTMForgetDerivative, LSTMTruncatedBPTT, LSTMStateNotDetached,
            GRUResetBeforeProduct)
