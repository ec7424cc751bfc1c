"""Recurrent modules in numpy, as torch.nn's: RNN (tanh or relu), LSTM and GRU.

Constructors, parameter names and shapes, gate order, forward's inputs and outputs are torch's:

    weight_ih_l{k}[_reverse]  (G·H, F_k)     G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
    weight_hh_l{k}[_reverse]  (G·H, H)       F_0 = input_size, F_k = num_directions·H for k > 0
    bias_ih_l{k}[_reverse]    (G·H,)         (with bias=True)
    bias_hh_l{k}[_reverse]    (G·H,)

in torch's order (layer by layer, direction 0 then 1, weight_ih, weight_hh, bias_ih, bias_hh).
Parameters start at zero, like every manual module's (manual/init.py draws torch's default,
U(−1/√H, 1/√H) for every one, in a layer list).

    forward(input, hx=None) -> (output, h_n)            RNN, GRU
                            -> (output, (h_n, c_n))     LSTM, hx = (h_0, c_0) or None
        input (T, N, F), or (N, T, F) with batch_first, or (T, F) unbatched; hx (L·D, N, H)
        (zeros when None); output (T, N, D·H) (batch_first: (N, T, D·H)): the last layer's h_t,
        direction 1's (the sequence read backwards) in the second half of the features;
        h_n (L·D, N, H) each layer and direction's last computed state (direction 1's at t = 0).
    backward(grad_output, grad_h_n=None) -> grad_input  (LSTM: grad_h_n = (dh_n, dc_n) or None)
        accumulates every parameter's gradient (Parameter.accumulate) and sets `grad_hx`, the
        gradient with respect to hx (as hx: an array, or (dh_0, dc_0) for LSTM).

Backpropagation through time (manual/rnn_cells.py has the per-cell formulas): per layer and
direction, the input projection of every step is one product before the loop, the loop makes one
product with W_hh per step, and after the backward loop each weight's gradient is one product
over all steps: grad W_ih = Σ_t da_tᵀ x_t, grad W_hh = Σ_t da_tᵀ h_{t−1}, grad_x = da W_ih.

After forward, `states` = {"h": (L, D, T, N, H)} (and "c" for LSTM): [l, d, t] is layer l,
direction d's state after time step t, t the position in the sequence for both directions; after
backward, `grad_states` the same keys, the total derivatives dE/dh_t, dE/dc_t (through the output
and the recurrence, and for the last state through h_n when the loss uses it). Unbatched input
keeps N = 1 there.

In a layer list (forward_in_list / backward_in_list) the module passes `output` on, and its state
is either zero at every batch or, with `carry = True`, the previous batch's final state (h_n, or
(h_n, c_n)), kept as `hx` (copied) — the graph cut there as torch's detach() cuts it: backward
never reaches the previous batch. A batch of another size than the carried state's starts from
zeros; `reset_state()` forgets the state.
"""
import numpy as np

from .module import Module
from .modules import Parameter
from .rnn_cells import GRUCell, LSTMCell, RNNCell, Run

NONLINEARITIES = ("tanh", "relu")


def _positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class RNNBase(Module):
    """What RNN, LSTM and GRU share: the parameters, the loops over layers and directions, the
    layout of inputs and outputs, states and the carried state. `cell` runs one layer and
    direction's time loop (manual/rnn_cells.py)."""

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        if device not in (None, "cpu"):
            raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            _positive(name, value)
        if dropout != 0:
            raise ValueError(f"dropout {dropout!r} between recurrent layers is not supported here: only 0")
        if proj_size != 0:
            raise ValueError(f"proj_size {proj_size!r} is not supported here: only 0")
        self.cell = cell
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.num_directions = 2 if bidirectional else 1
        self.dtype = np.dtype(np.float64 if dtype is None else dtype)
        self.carry, self.hx, self.grad_hx = False, None, None
        self._params = {}
        g, h = cell.gates * hidden_size, hidden_size
        for layer in range(num_layers):
            fan = input_size if layer == 0 else self.num_directions * h
            for suffix in ("", "_reverse")[:self.num_directions]:
                shapes = {"weight_ih": (g, fan), "weight_hh": (g, h)}
                if bias:
                    shapes.update(bias_ih=(g,), bias_hh=(g,))
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    self._params[name] = Parameter(np.zeros(shape, self.dtype))
                    setattr(self, name, self._params[name])

    def named_parameters(self, prefix=""):
        for name, p in self._params.items():
            yield prefix + name, p

    def reset_state(self):
        """Forget the carried state: the next batch in a list starts from zeros."""
        self.hx = None

    def _weights(self, layer, direction):
        """(weight_ih, weight_hh, bias_ih, bias_hh) arrays of a layer and direction (biases None without bias)."""
        suffix = "_reverse" if direction else ""
        get = lambda kind: self._params.get(f"{kind}_l{layer}{suffix}")
        return tuple(None if p is None else p.data for p in map(get, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))

    def _layout(self, input):
        """input as (T, N, F), and whether it was unbatched."""
        x = np.asarray(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected a 2-D (unbatched) or 3-D input, got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {x.shape[-1]}")
        if x.ndim == 2:
            return x[:, None], True
        return (x.transpose(1, 0, 2) if self.batch_first else x), False

    def _initial(self, hx, n, unbatched, dtype):
        """[(h0, c0 or None)] per layer and direction, from hx (zeros where None)."""
        parts = (hx if isinstance(hx, tuple) else (hx,)) if hx is not None else (None, None)
        shape = (self.num_layers * self.num_directions, n, self.hidden_size)
        out = []
        for part in parts[:2 if self.cell.has_c else 1]:
            if part is None:
                out.append(np.zeros(shape, dtype))
                continue
            part = np.asarray(part)[:, None] if unbatched else np.asarray(part)
            if part.shape != shape:
                raise ValueError(f"{type(self).__name__}: expected hidden size {list(shape)}, got {list(part.shape)}")
            out.append(part)
        return out

    def forward(self, input, hx=None):
        x, unbatched = self._layout(input)
        length, n = x.shape[:2]
        dtype = np.result_type(x.dtype, self.dtype)
        initial = self._initial(hx, n, unbatched, dtype)
        self._unbatched, self._runs, self._grads = unbatched, [], None
        hid, layer_in = self.hidden_size, np.ascontiguousarray(x, dtype)
        for layer in range(self.num_layers):
            out = np.empty((length, n, self.num_directions * hid), dtype)
            for d in range(self.num_directions):
                run = self._run(layer, d, layer_in, [s[layer * self.num_directions + d] for s in initial])
                out[..., d * hid:(d + 1) * hid] = run.after(run.h)
            layer_in = out
        finals = [np.stack([run.final(getattr(run, key)) for run in self._runs]) for key in self._keys()]
        if unbatched:
            out, finals = out[:, 0], [f[:, 0] for f in finals]
        elif self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, (tuple(finals) if self.cell.has_c else finals[0])

    def _run(self, layer, direction, x, initial):
        """One layer and direction's forward: the input projection of all steps in one product,
        then the cell's time loop. Returns the Run (kept for backward)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
        length, n, f = x.shape
        gates = (x.reshape(length * n, f) @ w_ih.T).reshape(length, n, -1)
        if b_ih is not None:
            gates += b_ih
            if self.cell.fold_b_hh:
                gates += b_hh
        run = Run(x, gates, self.hidden_size, direction == 1, *initial)
        self.cell.forward(run, w_hh, None if self.cell.fold_b_hh else b_hh)
        self._runs.append(run)
        return run

    def _keys(self):
        return ("h", "c") if self.cell.has_c else ("h",)

    def backward(self, grad_output, grad_h_n=None, input_grad=True):
        """grad_input (None with input_grad=False: a network's input needs none); parameter
        gradients accumulated; `grad_hx` set. grad_h_n: dE/dh_n (LSTM: (dE/dh_n, dE/dc_n)), or None."""
        g = np.asarray(grad_output)
        g = g[:, None] if self._unbatched else (g.transpose(1, 0, 2) if self.batch_first else g)
        finals = self._initial(grad_h_n, g.shape[1], self._unbatched, g.dtype)
        count, hid = self.num_directions, self.hidden_size
        grads = [None] * len(self._runs)
        starts = [np.empty_like(finals[0]) for _ in finals]
        for layer in reversed(range(self.num_layers)):
            below = None
            for d in range(count):
                k = layer * count + d
                dy = g[..., d * hid:(d + 1) * hid]
                grads[k], dx, first = self._back(layer, d, dy, [f[k] for f in finals],
                                                 need_dx=input_grad or layer > 0)
                for s, value in zip(starts, first):
                    s[k] = value
                below = dx if below is None else below + dx
            g = below
        self._grads = grads
        if self._unbatched:
            starts = [s[:, 0] for s in starts]
        self.grad_hx = tuple(starts) if self.cell.has_c else starts[0]
        if not input_grad:
            return None
        return g[:, 0] if self._unbatched else (np.ascontiguousarray(g.transpose(1, 0, 2)) if self.batch_first else g)

    def _back(self, layer, direction, dy, finals, need_dx=True):
        """One layer and direction's backward: the cell's loop, then every weight's gradient in one
        product over all steps. Returns ((dE/dh_t, dE/dc_t or None), grad of its input, (dh_0[, dc_0]))."""
        run = self._runs[layer * self.num_directions + direction]
        w_ih, w_hh, _, _ = self._weights(layer, direction)
        dinp, dhid, dhs, dcs, dh0, dc0 = self.cell.backward(run, w_hh, dy, *finals, *([None] * (2 - len(finals))))
        length, n, f = run.x.shape
        flat_in, flat_hid = dinp.reshape(length * n, -1), dhid.reshape(length * n, -1)
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        p = self._params
        p["weight_ih" + suffix].accumulate(flat_in.T @ run.x.reshape(length * n, f))
        p["weight_hh" + suffix].accumulate(flat_hid.T @ run.before(run.h).reshape(length * n, -1))
        if self.bias:
            p["bias_ih" + suffix].accumulate(flat_in.sum(axis=0))
            p["bias_hh" + suffix].accumulate(flat_hid.sum(axis=0))
        dx = (flat_in @ w_ih).reshape(length, n, f) if need_dx else None
        return (dhs, dcs), dx, (dh0,) if dc0 is None else (dh0, dc0)

    def _stacked(self, arrays):
        """(L·D) arrays (T, N, H) as one (L, D, T, N, H)."""
        out = np.stack(arrays)
        return out.reshape((self.num_layers, self.num_directions) + out.shape[1:])

    @property
    def states(self):
        """{"h": (L, D, T, N, H)[, "c": ...]}: every state after every step, of the last forward."""
        return {key: self._stacked([run.after(getattr(run, key)) for run in self._runs]) for key in self._keys()}

    @property
    def grad_states(self):
        """{"h": dE/dh_t, "c": dE/dc_t}, (L, D, T, N, H), of the last backward ({} before one)."""
        if not self._grads:
            return {}
        return {key: self._stacked([g[i] for g in self._grads]) for i, key in enumerate(self._keys())}

    def forward_in_list(self, x):
        """output, from the carried state when `carry` is on (and the batch size is the state's),
        else from zeros; keeps the final state (copied) as `hx`."""
        hx = self.hx if self.carry and self._fits(x) else None
        out, final = self.forward(x, hx)
        self.hx = tuple(a.copy() for a in final) if isinstance(final, tuple) else final.copy()
        return out

    def backward_in_list(self, grad_output):
        return self.backward(grad_output)

    def _fits(self, x):
        """Whether the carried state fits a batch x (same batch size)."""
        if self.hx is None:
            return False
        h = self.hx[0] if isinstance(self.hx, tuple) else self.hx
        x = np.asarray(x)
        if x.ndim == 2:
            return h.ndim == 2
        return h.ndim == 3 and h.shape[1] == x.shape[0 if self.batch_first else 1]


class RNN(RNNBase):
    """torch.nn.RNN: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(self.make_cell(nonlinearity), input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)

    def make_cell(self, nonlinearity):
        return RNNCell(nonlinearity)


class LSTM(RNNBase):
    """torch.nn.LSTM (proj_size 0 only): gates (i, f, g, o), c_t = f c_{t−1} + i g, h_t = o tanh(c_t)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__(self.make_cell(), input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)

    def make_cell(self):
        return LSTMCell()


class GRU(RNNBase):
    """torch.nn.GRU: gates (r, z, n), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) n + z h."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__(self.make_cell(), input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)

    def make_cell(self):
        return GRUCell()
