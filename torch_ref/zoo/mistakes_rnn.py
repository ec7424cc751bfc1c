"""The zoo's classic mistakes in recurrent modules (manual/rnn.py's LSTM and GRU), registered with
the others in torch_ref/zoo/mistakes.py (`ZOO`, `REGISTRY`) and built the same way
(torch_ref/zoo/faulty.py: a stand-in subclass with the faulty methods, through the engine's one
hook, manual.modules.substitute). Each runs on a small recurrent network (faulty.recurrent_net:
5 steps, hidden 4, every step's output in the loss) and is caught at its stage, module and time
step (the lockstep compares every time step's state, lockstep/states.py):

    LSTMGateOrder            the gate blocks read as (i, f, o, g): torch's g rows used as o and
                             its o rows as g               forward  h at t = 0
    LSTMNoCellGradient       dE/dc_{t−1} takes only the h path (the dc ⊙ f term dropped): dE/dc
                             is wrong from t = T − 2, dE/dh (compared first) from T − 3
                                                           delta    h at t = 2
    LSTMForgetDerivative     the forget gate's σ' omitted: da_f = dc ⊙ c_{t−1}
                                                           delta    h at t = 3 (T − 2)
    LSTMTruncatedBPTT        the loop stops one step early: dE/dh at t = 0 (the last step the
                             backward reaches) misses the recurrence
                                                           delta    h at t = 0
    LSTMStateNotDetached     stateful, the graph not cut: backward of batch 2 also runs back
                             through batch 1's kept caches from dE/dh_0, adding batch 1's share
                             into the parameters' gradients (iteration 1, the first carried batch)
                                                           grad     the LSTM's parameters
    GRUResetBeforeProduct    n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn) (r applied before the
                             product)                      forward  h at t = 0 (r ⊙ b_hn ≠ b_hn)

Each is a plug-in factory by its name here, e.g. `backprop-check run desc.toml --impl
torch_ref.zoo.mistakes_rnn:LSTMForgetDerivative`; `planted_module(m)` is its faulty module class
(constructed as torch's, e.g. for a table test against torch). A mistake in the backward loop
overrides one hook of the time loop (manual/rnn_cells.py: carry_c, forget_derivative, carry_h)
through the module's make_cell; GRUResetBeforeProduct changes the forward only (its backward is
the engine's formula at the mistaken forward's values: the forward is where it is caught).
"""
from contextlib import contextmanager

import numpy as np

from manual.rnn import GRU, LSTM
from manual.rnn_cells import GRUTimeLoop, LSTMTimeLoop, gate, sigmoid_inplace
from .faulty import Mistake, correct, recurrent_net, stand_ins
from .mistakes_layers import CHECKS

LSTM_NET, GRU_NET = recurrent_net("LSTM"), recurrent_net("GRU")
STATEFUL_LSTM_NET = recurrent_net("LSTM", stateful=True)
T = 5  # the networks' time steps
RNN_CHECKS = CHECKS + (("float32", "free"),)  # (float64 free, float32 resync, float32 free)


def in_zoo(id, what, replaces, description, stage, tensor, at="", iteration=0):
    """A zoo entry in the module its `replaces` names (LSTM or GRU), applying where the network has one."""
    (owner,) = {owner for owner, *_ in replaces}
    return Mistake(id, what, replaces, description, stage, tensor, iteration, at=at,
                   needs={"module": (owner.__name__,)}, zoo=True, checks=RNN_CHECKS)


def planted_module(m):
    """The faulty module class of recurrent mistake `m` (a subclass of manual's LSTM or GRU)."""
    (owner,) = {owner for owner, *_ in m.replaces}
    return stand_ins(m.replaces)[owner]


# --- gate order ------------------------------------------------------------------------------------

def swap_blocks(a, hidden):
    """a with gate blocks 2 and 3 (LSTM's g and o) exchanged along axis 0, in place."""
    g, o = a[2 * hidden:3 * hidden].copy(), a[3 * hidden:4 * hidden].copy()
    a[2 * hidden:3 * hidden], a[3 * hidden:4 * hidden] = o, g


@contextmanager
def swapped(module, grads=False):
    """The module's parameters (and gradients) with the g and o blocks exchanged, for the while."""
    def arrays():
        found = [p.data for _, p in module.named_parameters()]
        return found + ([p.grad for _, p in module.named_parameters() if p.grad is not None] if grads else [])
    for a in arrays():
        swap_blocks(a, module.hidden_size)
    try:
        yield
    finally:
        for a in arrays():
            swap_blocks(a, module.hidden_size)


def gates_reordered_forward(self, input, hx=None):
    """The gates read as (i, f, o, g) from torch's (i, f, g, o) layout."""
    with swapped(self):
        return correct(self, "forward")(input, hx)


def gates_reordered_backward(self, grad_output, grad_h_n=None, input_grad=True):
    with swapped(self, grads=True):
        return correct(self, "backward")(grad_output, grad_h_n, input_grad)


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


def cell(cls):
    """A module's make_cell that gives the faulty time loop `cls`."""
    def make_cell(self):
        return cls()
    make_cell.__name__ = f"make_{cls.__name__}"
    return make_cell


# --- the carried state, graph not cut --------------------------------------------------------------

def carry_keeping_the_graph(self, x):
    """forward_in_list that keeps the previous batch's caches when it starts from its final state."""
    carried = self.carry and self._fits(x) and self._runs
    self._previous = self._runs if carried else None
    return correct(self, "forward_in_list")(x)


def backward_into_the_previous_batch(self, grad_output, grad_h_n=None, input_grad=True):
    """backward that continues from dE/dh_0, dE/dc_0 into the previous batch (when the state was
    carried), adding that batch's share to the parameters' gradients. (backward, not
    backward_in_list: a layer list's first module is asked for no input gradient directly.)"""
    backward = correct(self, "backward")
    grad_input = backward(grad_output, grad_h_n, input_grad)
    if getattr(self, "_previous", None):
        kept = self._runs, self._grads, self.grad_hx
        self._runs = self._previous
        t, n = self._runs[0].x.shape[:2]
        shape = (n, t) if self.batch_first else (t, n)
        backward(np.zeros(shape + (self.num_directions * self.hidden_size,), self._runs[0].x.dtype),
                 self.grad_hx, input_grad=False)
        self._runs, self._grads, self.grad_hx = kept
    return grad_input


# --- the zoo's recurrent entries, in its order ------------------------------------------------------

LSTMGateOrder = in_zoo(
    "lstm-gate-order", "The LSTM's gate blocks read as (i, f, o, g) where torch lays them out (i, f, g, o): "
    "the cell candidate computed with the output gate's weights and the output gate with the candidate's.",
    {(LSTM, "forward"): gates_reordered_forward, (LSTM, "backward"): gates_reordered_backward}, LSTM_NET,
    "forward", "layers.0.h", "h at t = 0, layer 0, direction 0")
LSTMNoCellGradient = in_zoo(
    "lstm-no-cell-gradient", "No gradient through the cell state: dE/dc_{t−1} takes only the path through "
    "h_{t−1}, the direct term dE/dc_t ⊙ f_t dropped (so dE/dh goes wrong one step earlier still).",
    {(LSTM, "make_cell"): cell(NoCellGradientCell)}, LSTM_NET, "delta", "layers.0.h",
    f"h at t = {T - 3}, layer 0, direction 0")  # (h is compared before c: dE/dc is wrong from T − 2)
LSTMForgetDerivative = in_zoo(
    "lstm-forget-derivative-dropped", "The forget gate's derivative σ′ dropped: da_f = dc ⊙ c_{t−1}, not "
    "dc ⊙ c_{t−1} ⊙ f(1 − f).", {(LSTM, "make_cell"): cell(ForgetDerivativeCell)}, LSTM_NET, "delta",
    "layers.0.h", f"h at t = {T - 2}, layer 0, direction 0")
LSTMTruncatedBPTT = in_zoo(
    "lstm-truncated-bptt", "Backpropagation through time truncated by one step: the backward loop stops one "
    "step early, so dE/dh_0 misses the recurrence from step 1.", {(LSTM, "make_cell"): cell(TruncatedCell)},
    LSTM_NET, "delta", "layers.0.h", "h at t = 0, layer 0, direction 0")
LSTMStateNotDetached = in_zoo(
    "lstm-state-not-detached", "The hidden state carried across batches without cutting the graph: batch 2's "
    "backward runs on into batch 1 from dE/dh_0, dE/dc_0, adding batch 1's share to the gradients.",
    {(LSTM, "forward_in_list"): carry_keeping_the_graph, (LSTM, "backward"): backward_into_the_previous_batch},
    STATEFUL_LSTM_NET, "grad", "layers.0.bias_hh_l0", iteration=1)  # (gradients compared last parameter first)
GRUResetBeforeProduct = in_zoo(
    "gru-reset-before-product", "The GRU's reset gate applied before the product: W_hn (r ⊙ h) + b_hn, where "
    "torch applies it after, r ⊙ (W_hn h + b_hn).", {(GRU, "make_cell"): cell(ResetBeforeProductCell)},
    GRU_NET, "forward", "layers.0.h", "h at t = 0, layer 0, direction 0")

RNN_ZOO = [LSTMGateOrder, LSTMNoCellGradient, LSTMForgetDerivative, LSTMTruncatedBPTT, LSTMStateNotDetached,
           GRUResetBeforeProduct]
