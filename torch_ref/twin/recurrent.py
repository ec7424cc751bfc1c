"""The twin's recurrent modules: torch's nn.RNN, nn.LSTM, nn.GRU in a layer list, and LastStep.

In a layer list a recurrent module takes one tensor and gives one (contract 1 of issue 13): its
forward(x) runs torch's own forward with an initial state hx and returns torch's `output`,
keeping h_n (`self.h_n`). hx is zero, or, when the run is stateful (`carry`), the previous batch's
final state with the graph cut (detach()), as the manual modules carry theirs; a batch of another
size than the carried state's starts from zeros.

nn.LSTM does not expose its per-time-step states, which the lockstep compares (contract 3):
`probe(grad_output)` unrolls the same computation step by step in torch, with autograd, from the
module's own parameters, input and initial state (torch's cell formulas: LSTM gates i, f, g, o;
GRU r, z, n with r applied to W_hn h + b_hn), and backpropagates the gradient that reached the
module's output through it, so that both the states and their total gradients dE/dh_t, dE/dc_t
(through the output and the recurrence) are autograd's. tests/test_sequence_check.py holds the
unrolled output equal to nn.LSTM's to float64 rounding.
"""
import torch
from torch import nn



class Recurrent:
    """What the twin's RNN, LSTM and GRU share: forward(x) -> output with hx zero or carried, and
    the states probe. Mixed in before torch's class, whose forward(input, hx) it calls."""

    carry = False  # [run] stateful: start each batch from the previous batch's final state
    hx = None      # the carried state (detached), None: zeros

    def reset_state(self):
        """Forget the carried state: the next batch starts from zeros."""
        self.hx = None

    def carry_from(self, h, c=None):
        """Carry the final state of a batch whose per-time-step states were h (and c for LSTM),
        each (num_layers, num_directions, T, N, hidden_size) as a result's "states" hold them
        (numpy or torch): h_n[l·D + d] is layer l, direction d's state after its last step, t = T−1
        forward, t = 0 in the reverse direction (torch_ref/lockstep/rounding.py's Start)."""
        finals = [self._final(h)] + ([self._final(c)] if self.mode == "LSTM" else [])
        self.hx = tuple(finals) if self.mode == "LSTM" else finals[0]

    def _final(self, states):
        w = self.weight_hh_l0
        s = torch.as_tensor(states).to(dtype=w.dtype, device=w.device)
        last = [s[:, 0, -1]] + ([s[:, 1, 0]] if self.bidirectional else [])
        return torch.stack(last, 1).reshape(-1, *s.shape[3:])

    def initial_state(self, x):
        """hx for a batch x: the carried state (detached) when carrying and the batch size fits, else None."""
        hx = self.hx
        if not self.carry or hx is None:
            return None
        n = x.shape[0] if self.batch_first else x.shape[1]
        h = hx[0] if isinstance(hx, tuple) else hx
        return hx if h.shape[1] == n else None

    def forward(self, x, hx=None):
        """torch's output of x from hx (None: zero, or the carried state); h_n kept in `self.h_n`,
        and carried (detached) when `carry` and in training mode (an evaluation pass leaves it)."""
        hx = self.initial_state(x) if hx is None else hx
        output, h_n = super().forward(x, hx)
        self.last_input, self.last_hx, self.h_n = x, hx, h_n
        if self.carry and self.training:
            self.hx = tuple(t.detach() for t in h_n) if isinstance(h_n, tuple) else h_n.detach()
        return output

    def probe(self, grad_output, grad_h_n=None):
        """({"h": states, "c": ...}, {"h": dE/dh_t, ...}) of the last forward, each of shape
        (num_layers, num_directions, T, N, hidden_size), detached: the computation unrolled from the
        same input, initial state and parameters (`unroll`), backpropagated from `grad_output`
        (dE/d output, the delta the twin kept) and `grad_h_n` (dE/dh_n; None: the loss does not use it)."""
        with torch.enable_grad():
            x = self.last_input.detach()
            output, steps, finals = unroll(self, x, self.last_hx)
            flat = [t for per_key in steps.values() for per_ld in per_key for t in per_ld]
            outs, grads = [output], [grad_output]
            if grad_h_n is not None:
                outs, grads = outs + [finals], grads + [grad_h_n]
            got = torch.autograd.grad(outs, flat, grads, allow_unused=True, materialize_grads=True)
        states, grad_states, k = {}, {}, 0
        for key, per_key in steps.items():
            n = sum(len(per_ld) for per_ld in per_key)
            states[key] = _shape(torch.stack([t.detach() for t in flat[k:k + n]]), self, x)
            grad_states[key] = _shape(torch.stack(got[k:k + n]), self, x)
            k += n
        return states, grad_states


def _shape(stacked, module, x):
    """(L·D·T, N, H) stacked in (layer, direction, t) order -> (L, D, T, N, H)."""
    d = 2 if module.bidirectional else 1
    return stacked.reshape(module.num_layers, d, -1, *stacked.shape[1:])


def unroll(module, x, hx=None):
    """torch's recurrent computation step by step: (output, {"h": [[h_0 .. h_{T−1}] per (layer,
    direction)], "c": ... (LSTM)}, h_n) with every state a node of the autograd graph. For the
    reverse direction, the state at t is computed from x_t .. x_{T−1} (it runs t = T−1 down to 0)."""
    mode, dirs = module.mode, 2 if module.bidirectional else 1
    inp = x if module.batch_first else x.transpose(0, 1)  # (N, T, F)
    n, steps = inp.shape[0], inp.shape[1]
    if hx is None:
        zero = inp.new_zeros(module.num_layers * dirs, n, module.hidden_size)
        hx = (zero, zero) if mode == "LSTM" else zero
    h0, c0 = hx if mode == "LSTM" else (hx, None)
    states = {"h": [], "c": []} if mode == "LSTM" else {"h": []}
    finals = []
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            hs, cs = _direction(module, mode, inp, layer, d, h0[k], None if c0 is None else c0[k])
            states["h"].append(hs)
            if cs is not None:
                states["c"].append(cs)
            finals.append(hs[0] if d else hs[-1])
            outs.append(torch.stack(hs, 1))
        inp = torch.cat(outs, -1) if dirs > 1 else outs[0]
    output = inp if module.batch_first else inp.transpose(0, 1)
    return output, states, torch.stack(finals)


def _direction(module, mode, inp, layer, d, h, c):
    """One layer and direction over every time step: ([h_t for t in 0..T−1], [c_t] or None)."""
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
    b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
    b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
    xs = nn.functional.linear(inp, w_ih, b_ih)  # (N, T, G·H): the input's part of every step at once
    steps = inp.shape[1]
    hs, cs = [None] * steps, [None] * steps
    for t in (reversed(range(steps)) if d else range(steps)):
        gh = nn.functional.linear(h, w_hh, b_hh)
        if mode == "LSTM":
            i, f, g, o = (xs[:, t] + gh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            cs[t] = c
        elif mode == "GRU":
            xr, xz, xn = xs[:, t].chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        else:
            pre = xs[:, t] + gh
            h = torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)
        hs[t] = h
    return hs, (cs if mode == "LSTM" else None)


class RNN(Recurrent, nn.RNN):
    """nn.RNN in a layer list: forward(x) -> output (Recurrent)."""


class LSTM(Recurrent, nn.LSTM):
    """nn.LSTM in a layer list: forward(x) -> output (Recurrent)."""


class GRU(Recurrent, nn.GRU):
    """nn.GRU in a layer list: forward(x) -> output (Recurrent)."""


class LastStep(nn.Module):
    """The last time step of a batch-first sequence, x[:, -1]: (N, T, F) -> (N, F) (this project's:
    torch has no such class)."""

    def forward(self, x):
        return x[:, -1]


RECURRENT = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
