"""Central finite differences in float64: a third source of gradients that uses the forward pass only.

(Not torch.autograd.gradcheck, which compares a function's autograd Jacobian with finite differences
and returns a bool: this computes the differences of the description's loss and returns them.)

    dE/dp ≈ (E(p + h) − E(p − h)) / (2h)       one parameter element at a time, all others fixed

E is the description's network and loss evaluated by the manual forward pass (`MLP.forward`,
or a layer list's `Layered.forward`, and `loss.forward`); no backward pass is involved, so a
mistake in backprop cannot leak into these numbers. Cost: 2 forward passes over the batch per
parameter element.

A layer list is differentiated as the training step computes its loss: in training mode (batch
norm with the batch's statistics), with the iteration's dropout keep-masks fixed (the same
elements dropped in every evaluation), and its buffers (running statistics) put back after each
evaluation, so that no evaluation sees another's update and none reaches the run, which continues
from its own state.

Step size, per element: h = eps^(1/3) · max(1, |p|) (eps = 2.2e-16, so h ≈ 6e-6 for |p| ≤ 1), the
step that balances the truncation error of the central difference, h²·|E'''|/6, against the
rounding error of the two evaluations, eps·|E|/h; both are then about eps^(2/3) ≈ 4e-11 times the
scale of E and its third derivative. The step actually taken is (p + h) − p, exactly representable.

`elements` ({name: flat indices}) restricts a tensor to some of its elements (the lockstep's --fd
samples a large tensor's: torch_ref/lockstep/finite_differences.py); its differences are then
returned for those elements only, in that order (a 1-D array).

A [run] stateful layer list starts every evaluation from the state its recurrent modules carried
into the iteration (`state`'s "{module}.h_n" and "{module}.c_n", the twin's; zeros where absent),
a constant as the detached state of the run is: the graph is cut there on both sides.

Only parameters are perturbed: integer token ids (an Embedding's input) have no neighbours. An
Embedding's padding row is looked up like any other, so the loss depends on it, but torch defines
its gradient as zero: its differences are set to zero, the gradient the padding row is given.
"""
import numpy as np

from .embedding import TimeSteps
from .layered import Layered, walk
from .losses import make_loss
from .modules import MLP
from .penalty import make_penalty

EPS = np.finfo(np.float64).eps


def step_size(p):
    """h = eps^(1/3) · max(1, |p|): central differences' best step for a parameter of size |p|."""
    return EPS ** (1.0 / 3.0) * max(1.0, abs(p))


class NetworkLoss:
    """E(state) for one batch: the description's network and loss, forward only, in float64. A
    layer list in training mode with `masks` ({name: keep-mask}, the iteration's) handed to its
    dropout modules; its buffers are restored after every evaluation (load_state_dict's values)."""

    def __init__(self, desc, masks=None):
        net = desc["network"]
        if "layers" in net:
            self.model = Layered(net["layers"], np.float64)
            self.model.set_masks(masks)
        else:
            self.model = MLP(net["sizes"], net["activation"], net["bias"], np.float64, net.get("activation_args"))
        self.loss_fn = TimeSteps(make_loss(net["loss"], net.get("loss_args")))  # (N, T, C): every time step
        self.params = {name: p.data for name, p in self.model.named_parameters()}  # views, perturbed in place
        self.penalty = make_penalty(desc.get("penalty"), dict(self.model.named_parameters()))  # [penalty]
        self.buffers = dict(self.model.named_buffers())  # the live arrays (updated in place by a forward)
        self.saved = {}
        self.recurrent = {}  # [run] stateful: {name: module}, each started from its carried state
        if "layers" in net and desc["run"].get("stateful"):
            self.model.set_carry(True)
            self.recurrent = {name: m for name, m, _, _ in walk(self.model.layers) if hasattr(m, "reset_state")}
        self.carried = {}

    def load_state_dict(self, state):
        for name, data in self.params.items():
            data[...] = state[name]
        for name, data in self.buffers.items():
            data[...] = state[name]
        self.saved = {name: data.copy() for name, data in self.buffers.items()}
        self.carried = {}
        for name in self.recurrent:
            parts = [np.asarray(state[f"{name}.{k}"], np.float64) for k in ("h_n", "c_n") if f"{name}.{k}" in state]
            self.carried[name] = None if not parts else tuple(parts) if len(parts) == 2 else parts[0]

    def padding_rows(self):
        """(weight name, padding_idx) of every Embedding with a padding row: its row is looked up, so
        the loss depends on it, but by torch's definition it receives no gradient."""
        if not isinstance(self.model, Layered):
            return []
        return [(f"{name}.weight", m.padding_idx) for name, m, _, _ in walk(self.model.layers)
                if getattr(m, "padding_idx", None) is not None and type(m).__name__ == "Embedding"]

    def __call__(self, x, y):
        for name, m in self.recurrent.items():  # (a forward replaces the carried state with its own final one)
            m.hx = self.carried[name]
        try:
            loss = float(self.loss_fn.forward(self.model.forward(x), y))
            return loss + float(self.penalty.value()) if self.penalty else loss
        finally:
            for name, data in self.buffers.items():
                data[...] = self.saved[name]


def central_differences(desc, state, x, y, names, masks=None, elements=None):
    """{name: dE/d(name)} by central differences at `state` on the batch (x, y), for the parameters
    `names`, in float64. Also returns the number of forward passes it took. A layer list: `state`
    holds its buffers too, `masks` the iteration's dropout keep-masks (None: no dropout).
    `elements` ({name: flat indices}, None: every element): the tensors differentiated at those
    elements only, returned as 1-D arrays of their differences in that order.

    With the description's gradient clipping ([clip]), the differences are clipped the same way,
    since the gradients they are compared with are the clipped ones (which needs every element:
    no `elements` then)."""
    elements = elements or {}
    if elements and desc.get("clip"):
        raise ValueError("clipped differences need every element of every tensor: no elements with [clip]")
    loss = NetworkLoss(desc, masks)
    loss.load_state_dict(state)
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind != "i":  # token ids stay integers (they are not perturbed: only parameters are)
        x = x.astype(np.float64)
    if y.dtype.kind == "f":  # class-index targets stay integers
        y = y.astype(np.float64)
    grads, passes = {}, 0
    for name in names:
        p = loss.params[name]
        flat = p.reshape(-1)  # a view (p is contiguous)
        which = elements.get(name)
        which = range(flat.size) if which is None else np.asarray(which, np.int64)
        g = np.empty_like(p) if name not in elements else np.empty(len(which), p.dtype)
        gflat = g.reshape(-1)
        for k, i in enumerate(which):
            p0 = flat[i]
            h = step_size(p0)
            flat[i] = p0 + h
            h_plus = flat[i] - p0  # the step actually taken, exact in floating point
            e_plus = loss(x, y)
            flat[i] = p0 - h
            h_minus = p0 - flat[i]
            e_minus = loss(x, y)
            flat[i] = p0
            gflat[k] = (e_plus - e_minus) / (h_plus + h_minus)
            passes += 2
        grads[name] = g
    for name, row in loss.padding_rows():  # torch's definition: no gradient, though the loss reads the row
        if name in elements:
            grads[name][np.unravel_index(elements[name], loss.params[name].shape)[0] == row] = 0.0
        elif name in grads:
            grads[name][row] = 0.0
    if desc.get("clip"):
        clip_grads(grads, desc["clip"])
    return grads, passes


class _Grad:
    def __init__(self, grad):
        self.grad = grad


def clip_grads(grads, how):
    """Clip {name: gradient} in place as the description's [clip] says (manual/clip_grad.py)."""
    from . import clip_grad
    params = [_Grad(g) for g in grads.values()]
    if "clip_value" in how:
        clip_grad.clip_grad_value_(params, how["clip_value"])
    else:
        clip_grad.clip_grad_norm_(params, how["max_norm"], how.get("norm_type", 2.0))
