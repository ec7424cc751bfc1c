"""The time loops of manual/rnn.py's RNN, LSTM and GRU: one layer, one direction, forward and
backpropagation through time, in numpy.

A `Run` holds one layer and direction's arrays. The input projection of every time step is made
before the loop, in one product (rnn.py):

    gates[t] = x_t W_ihᵀ + b_ih (+ b_hh for RNN and LSTM, where it is added to the same sum)

and each cell's forward adds the recurrent product h_{t−1} W_hhᵀ (one matrix product per step),
then overwrites `gates` in place with the activated gates. States live in buffers of T + 1 rows,
the initial state in the row the direction starts from (row 0 forward, row T in reverse), so that
both "the state after step t" and "the state before step t" of all steps are contiguous slices:

    after(run)  = h[1:T+1] forward, h[0:T] reverse           (the states, position order)
    before(run) = h[0:T]   forward, h[1:T+1] reverse         (h_{t−1} of each step)

Backward first computes, for all steps at once, the factors by which each gate's pre-activation
gradient depends on dE/dh_t (and dE/dc_t); the loop then carries only the recurrence: per step a
few elementwise products and one matrix product with W_hh. It returns the gradients of the
pre-activations (T, N, G·H) for the input side and the hidden side (the same array except for
the GRU, whose n gate has r in between), from which rnn.py takes all weight gradients in one
product each after the loop. The per-step dE/dh_t (and dE/dc_t) are the total derivatives
(through the output and the recurrence), kept as the module's grad_states.

Gate order as torch's: RNN one block; LSTM (i, f, g, o); GRU (r, z, n).
"""
import numpy as np


class Run:
    """One layer and direction's arrays: input x (T, N, F), gates (T, N, G·H), the state buffers
    h (and c) of T + 1 rows; `reverse` runs t = T−1 … 0."""

    def __init__(self, x, gates, hidden, reverse, h0, c0=None):
        t, n = x.shape[:2]
        self.x, self.gates, self.hidden, self.reverse = x, gates, hidden, reverse
        self.off = 0 if reverse else 1  # the row of the state after step t is t + off
        self.h = np.empty((t + 1, n, hidden), gates.dtype)
        self.h[t if reverse else 0] = h0
        if c0 is not None:
            self.c = np.empty_like(self.h)
            self.c[t if reverse else 0] = c0

    @property
    def steps(self):
        """Positions t in the order the direction computes them."""
        t = self.x.shape[0]
        return range(t - 1, -1, -1) if self.reverse else range(t)

    def after(self, buf):
        """The states after each step, position order, (T, N, H)."""
        return buf[self.off:self.off + self.x.shape[0]]

    def before(self, buf):
        """The state each step starts from, position order, (T, N, H)."""
        return buf[1 - self.off:1 - self.off + self.x.shape[0]]

    def final(self, buf):
        """The state after the last step the direction computes (h_n's part)."""
        return buf[0 if self.reverse else -1]


def sigmoid_(x):
    """x ← 1 / (1 + exp(−x)) in place, torch's formula (overflow to inf gives the exact limit 0).
    (−x as a product by −1: numpy 2.4's in-place np.negative gets a float32 column one element
    wide and strided wrong, e.g. the gates of hidden_size 1.)"""
    np.multiply(x, -1.0, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def gate(a, k, hidden):
    """Gate block k, (..., H), of an array of gates (..., G·H)."""
    return a[..., k * hidden:(k + 1) * hidden]


class RNNCell:
    """h_t = act(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh), act tanh or relu.

    Backward: da_t = dE/dh_t ⊙ act'(h_t) (1 − h_t², or [h_t > 0]); dE/dh_{t−1} gets da_t W_hh."""
    gates, has_c, fold_b_hh = 1, False, True

    def __init__(self, nonlinearity="tanh"):
        self.nonlinearity = nonlinearity

    def forward(self, run, w_hh, b_hh):
        h, g, whT = run.h, run.gates, w_hh.T
        for t in run.steps:
            a = g[t]
            a += h[t + 1 - run.off] @ whT
            if self.nonlinearity == "tanh":
                np.tanh(a, out=h[t + run.off])
            else:
                np.maximum(a, 0, out=h[t + run.off])

    def backward(self, run, w_hh, dy, dh_n, dc_n=None):
        hs = run.after(run.h)
        factor = 1.0 - hs * hs if self.nonlinearity == "tanh" else (hs > 0).astype(hs.dtype)
        da, dhs = np.empty_like(run.gates), np.empty_like(hs)
        dh_next = dh_n
        for k, t in enumerate(reversed(run.steps)):
            dh = dhs[t]
            np.add(dy[t], dh_next, out=dh)
            np.multiply(dh, factor[t], out=da[t])
            dh_next = self.carry_h(da[t] @ w_hh, k, len(dhs))
        return da, da, dhs, None, dh_next, None

    def carry_h(self, dh_prev, k, steps):
        """What of dE/dh_{t−1} (from step k of the backward loop, of `steps`) reaches the step
        before: all of it (a hook for the zoo's truncated backpropagation through time)."""
        return dh_prev


class LSTMCell(RNNCell):
    """Gates (i, f, g, o) = (σ, σ, tanh, σ)(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh);
    c_t = f ⊙ c_{t−1} + i ⊙ g,  h_t = o ⊙ tanh(c_t).

    Backward, with dh = dE/dh_t (output + recurrence) and dc = dE/dc_t:
        dc   = dh ⊙ o ⊙ (1 − tanh²c_t) + dE/dc_{t+1} ⊙ f_{t+1}
        da_i = dc ⊙ g ⊙ i(1 − i)         da_f = dc ⊙ c_{t−1} ⊙ f(1 − f)
        da_g = dc ⊙ i ⊙ (1 − g²)         da_o = dh ⊙ tanh(c_t) ⊙ o(1 − o)
        dE/dh_{t−1} += da W_hh,  dE/dc_{t−1} += dc ⊙ f_t.
    The factors multiplying dc and dh are made for all steps before the loop (`factors`)."""
    gates, has_c = 4, True

    def forward(self, run, w_hh, b_hh):
        hid, h, c, g, whT = run.hidden, run.h, run.c, run.gates, w_hh.T
        run.tanh_c = np.empty_like(run.after(h))
        spare = np.empty_like(h[0])
        with np.errstate(over="ignore"):
            for t in run.steps:
                p, q, a = t + 1 - run.off, t + run.off, g[t]
                a += h[p] @ whT
                self.activate(a, hid)
                i, f, gg, o = (gate(a, k, hid) for k in range(4))
                np.multiply(f, c[p], out=c[q])
                np.multiply(i, gg, out=spare)
                c[q] += spare
                np.tanh(c[q], out=run.tanh_c[t])
                np.multiply(o, run.tanh_c[t], out=h[q])

    def activate(self, a, hid):
        """The gates' nonlinearities in place on one step's (N, 4H): σ on i, f and o, tanh on g."""
        sigmoid_(a[:, :2 * hid])
        np.tanh(a[:, 2 * hid:3 * hid], out=a[:, 2 * hid:3 * hid])
        sigmoid_(a[:, 3 * hid:])

    def factors(self, run):
        """(J (T, N, 4, H), K (T, N, H)): da_{i,f,g} = dc ⊙ J[:, :, :3], da_o = dh ⊙ J[:, :, 3],
        dc = dh ⊙ K + (recurrence)."""
        hid = run.hidden
        i, f, g, o = (gate(run.gates, k, hid) for k in range(4))
        tc, t, n = run.tanh_c, *run.gates.shape[:2]
        j = np.empty((t, n, 4, hid), run.gates.dtype)
        j[:, :, 0] = g * i * (1 - i)
        j[:, :, 1] = run.before(run.c) * self.forget_derivative(f)
        j[:, :, 2] = i * (1 - g * g)
        j[:, :, 3] = tc * o * (1 - o)
        return j, o * (1 - tc * tc)

    def forget_derivative(self, f):
        """σ'(a_f) = f (1 − f) (a hook for the zoo's mistake that drops it)."""
        return f * (1 - f)

    def carry_c(self, dc, f):
        """dE/dc_{t−1}'s part from step t, dc ⊙ f (a hook for the zoo's cut cell-state path)."""
        return dc * f

    def backward(self, run, w_hh, dy, dh_n, dc_n):
        hid = run.hidden
        j, k_c = self.factors(run)
        f = gate(run.gates, 1, hid)
        length, n = run.gates.shape[:2]
        da = np.empty((length, n, 4, hid), run.gates.dtype)
        dhs, dcs = np.empty((2, length, n, hid), run.gates.dtype)
        dh_next, dc_next = dh_n, dc_n
        for k, t in enumerate(reversed(run.steps)):
            dh, dc = dhs[t], dcs[t]
            np.add(dy[t], dh_next, out=dh)
            np.multiply(dh, k_c[t], out=dc)
            dc += dc_next
            np.multiply(dc[:, None, :], j[t, :, :3], out=da[t, :, :3])
            np.multiply(dh, j[t, :, 3], out=da[t, :, 3])
            dh_next = self.carry_h(da[t].reshape(n, -1) @ w_hh, k, length)
            dc_next = self.carry_c(dc, f[t])
        da = da.reshape(length, n, -1)
        return da, da, dhs, dcs, dh_next, dc_next


class GRUCell(RNNCell):
    """As torch: r, z = σ(x W_i{r,z}ᵀ + b_i{r,z} + h_{t−1} W_h{r,z}ᵀ + b_h{r,z}),
    n = tanh(x W_inᵀ + b_in + r ⊙ (h_{t−1} W_hnᵀ + b_hn)),  h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
    (computed as (h_{t−1} − n) ⊙ z + n, torch's form). b_hh stays in the hidden product.

    Backward, with dh = dE/dh_t and hn = h_{t−1} W_hnᵀ + b_hn:
        da_n = dh ⊙ (1 − z) ⊙ (1 − n²)       (input side; the hidden side's n block is da_n ⊙ r)
        da_r = da_n ⊙ hn ⊙ r(1 − r)           da_z = dh ⊙ (h_{t−1} − n) ⊙ z(1 − z)
        dE/dh_{t−1} += dh ⊙ z + [da_r, da_z, da_n ⊙ r] W_hh."""
    gates, fold_b_hh = 3, False

    def forward(self, run, w_hh, b_hh):
        hid, h, g, whT = run.hidden, run.h, run.gates, w_hh.T
        run.hn = np.empty_like(g)
        spare = np.empty_like(h[0])
        with np.errstate(over="ignore"):
            for t in run.steps:
                p, q, a, hn = t + 1 - run.off, t + run.off, g[t], run.hn[t]
                self.hidden_product(h[p], a, hn, whT, b_hh, hid)
                r, z, n = (gate(a, k, hid) for k in range(3))
                np.multiply(r, gate(hn, 2, hid), out=spare)
                n += spare
                np.tanh(n, out=n)
                np.subtract(h[p], n, out=h[q])
                h[q] *= z
                h[q] += n

    def hidden_product(self, h, a, hn, whT, b_hh, hid):
        """hn ← h W_hhᵀ + b_hh; r and z made (σ in place on a's first two blocks)."""
        np.matmul(h, whT, out=hn)
        if b_hh is not None:
            hn += b_hh
        a[:, :2 * hid] += hn[:, :2 * hid]
        sigmoid_(a[:, :2 * hid])

    def backward(self, run, w_hh, dy, dh_n, dc_n=None):
        hid = run.hidden
        r, z, n = (gate(run.gates, k, hid) for k in range(3))
        hn = gate(run.hn, 2, hid)
        length, batch = run.gates.shape[:2]
        cn = (1 - z) * (1 - n * n)
        kh = np.empty((length, batch, 3, hid), run.gates.dtype)
        kh[:, :, 0] = cn * hn * r * (1 - r)
        kh[:, :, 1] = (run.before(run.h) - n) * z * (1 - z)
        kh[:, :, 2] = cn * r
        dhid, dhs = np.empty_like(kh), np.empty((length, batch, hid), run.gates.dtype)
        dh_next = dh_n
        for k, t in enumerate(reversed(run.steps)):
            dh = dhs[t]
            np.add(dy[t], dh_next, out=dh)
            np.multiply(dh[:, None, :], kh[t], out=dhid[t])
            dh_prev = dhid[t].reshape(batch, -1) @ w_hh
            dh_prev += dh * z[t]
            dh_next = self.carry_h(dh_prev, k, length)
        dinp = dhid.copy()
        np.multiply(dhs, cn, out=dinp[:, :, 2])
        return dinp.reshape(length, batch, -1), dhid.reshape(length, batch, -1), dhs, None, dh_next, None
