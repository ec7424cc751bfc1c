"""The torch twin: the same MLP as a torch.nn.Module, trained by autograd and torch.optim.

It is built from the same parsed description as the manual side and takes its initial
parameters from it, so both start bit-for-bit equal. `Twin.train_step` returns the same dict
as the manual interface (numpy arrays), with each layer's delta dE/dnet taken by `retain_grad`.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from manual.names import ACTIVATION_REGISTRY, LOSS_REGISTRY, resolve

from ..errors import SpecError
from .layers import Layered
from .penalty import BatchMean, Penalized, param_groups
from .optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler  # noqa: F401  (importable here)


class HalfSSELoss(nn.Module):
    """The seed's error E = Σ ½(target − out)², summed over outputs and batch (not torch's)."""

    def __init__(self, reduction="sum"):
        super().__init__()
        assert reduction == "sum", reduction  # "batch-mean" divides it (loss_function)

    def forward(self, input, target):
        return 0.5 * F.mse_loss(input, target, reduction="sum")


def from_torch(registry, namespace):
    """name -> torch's class in `namespace` (torch.nn, torch.optim, ...) by the registry's class
    name, taking the description's arguments (manual.names.resolve); this module's own class for
    a name that is not torch's (half-sse)."""
    own = sys.modules[__name__]
    return {name: resolve({name: entry}, namespace if entry.torch else own)[name]
            for name, entry in registry.items()}


# name in the description -> torch's class, by the class name in manual/names.py's registry
ACTIVATIONS = from_torch(ACTIVATION_REGISTRY, nn)
LOSSES = from_torch(LOSS_REGISTRY, nn)
# the optimizers and schedules (torch.optim's, and the eps_inside_sqrt variants): ./optim.py


def activation(name, args=None):
    """torch.nn's module for one layer's activation, made with the description's arguments."""
    return ACTIVATIONS[name](**(args or {}))


def loss_function(name, args=None):
    """torch.nn's loss module, called as loss(input, target), made with the description's
    arguments. `target` ("index" or "probability") is this project's, not torch's (torch tells
    them apart by the target's dtype): the registry drops it. reduction = "batch-mean" (this
    project's) is the loss with "sum" divided by the batch's N (penalty.BatchMean)."""
    args = dict(args or {})
    if args.get("reduction") == "batch-mean":
        return BatchMean(loss_function(name, {**args, "reduction": "sum"}))
    return LOSSES[name](**args)


class TimeSteps(nn.Module):
    """A loss over every time step in torch's convention: output (N, T, C) as (N, C, T), the class
    axis second, loss(output.transpose(1, 2), target (N, T)); the mean is over all N·T positions.
    (The manual side flattens to (N·T, C) instead, as nanoGPT does: the same loss and gradient.)"""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, input, target):
        return self.loss(input.transpose(1, 2) if input.dim() == 3 else input, target)


class SharedBiasLinear(nn.Module):
    """y = x @ W.T + b with one scalar b per layer, kept as a buffer: in state_dict, never trained."""

    def __init__(self, in_features, out_features, **factory):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.register_buffer("bias", torch.zeros((), **factory))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class MLP(nn.Module):
    """layers[k] (Linear) then activation[k], for every layer k."""

    def __init__(self, sizes, activations, bias="per-neuron", dtype=torch.float64, device="cpu",
                 activation_args=None):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        if bias == "shared-frozen":
            make = lambda i, o: SharedBiasLinear(i, o, **factory)
        else:
            make = lambda i, o: nn.Linear(i, o, bias=bias == "per-neuron", **factory)
        self.layers = nn.ModuleList(make(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        activation_args = activation_args or [{} for _ in activations]
        self.activations = [activation(a, args) for a, args in zip(activations, activation_args)]
        self.nets = []
        self.perturb = None  # rounding-sized noise in the intermediates (rounding.py's _InPlace), or None

    def forward(self, x, keep_deltas=True):
        self.nets.clear()  # (a list set once: assigning a Module attribute costs more than a step)
        for k, (layer, act) in enumerate(zip(self.layers, self.activations)):
            net = layer(x)
            if self.perturb is not None:
                self.perturb.pre_activation(k, net)
            if keep_deltas and net.requires_grad:
                net.retain_grad()  # autograd's dE/dnet: the layer's delta
            self.nets.append(net)
            x = act(net)
            if self.perturb is not None:
                x = self.perturb.activation(k, net, x)
        return x


def torch_dtype(name):
    return {"float64": torch.float64, "float32": torch.float32}[name]


class Twin:
    """The reference side of the lockstep: model, loss and optimizer in torch."""

    def __init__(self, desc, state, device=None, dtype=None):
        net, run = desc["network"], desc["run"]
        self.device = torch.device(device or run["device"])
        self.dtype = torch_dtype(dtype or run["dtype"])
        self.layered = "layers" in net
        if self.layered:
            self.model = Layered(net["layers"], self.dtype, self.device)
            self.model.set_carry(bool(run.get("stateful")))  # [run] stateful: recurrent state carried, graph cut
        else:
            self.model = MLP(net["sizes"], net["activation"], net["bias"], self.dtype, self.device,
                             net.get("activation_args"))
        self.loss_fn = loss_function(net["loss"], net.get("loss_args"))
        if len(net.get("output_shape", ())) == 2:  # (N, T, C): the loss over every time step
            self.loss_fn = TimeSteps(self.loss_fn)
        self.load_state_dict(state)
        self.params = dict(self.model.named_parameters())
        self.state = self.model.state_dict()  # views of the live tensors, read after every step
        self.on_cpu = self.device.type == "cpu"
        # numpy views of the live parameters and buffers, made once (updated in place by the optimizer)
        self.state_arrays = [t.numpy() for t in self.state.values()] if self.on_cpu else None
        self.delta_names = (self.model.names if self.layered else
                            [f"layers.{k}" for k in range(len(self.model.layers))])
        self.buffers = tuple(name for name, _ in self.model.named_buffers())
        self.param_list = list(self.params.values())  # the state dict's order, made once
        groups = desc["optimizer"].get("param_groups")
        if groups:  # [[optimizer.param_groups]]: torch's list of groups, in the description's order
            opt = {k: v for k, v in desc["optimizer"].items() if k != "param_groups"}
            self.optimizer = make_optimizer(param_groups(groups, self.params), opt)
        else:
            self.optimizer = make_optimizer(self.param_list, desc["optimizer"])
        penalty = desc.get("penalty")
        if penalty:  # [penalty]: added to the loss, differentiated by autograd
            self.loss_fn = Penalized(self.loss_fn, [self.params[n] for n in penalty["params"]],
                                     penalty["l1"], penalty["l2"])
        self.scheduler = make_scheduler(self.optimizer, desc.get("scheduler"), desc)
        self.clip = desc.get("clip")
        # A first module without parameters (Flatten, LastStep, an activation): its output would not
        # require grad, and autograd would give it no delta; a float input that requires grad gives
        # the real dE/dy0 there, as the implementation's backward does (nothing else changes).
        self.grad_input = self.layered and next(self.model.layers[0].parameters(), None) is None

    def clip_grads(self):
        """torch.nn.utils.clip_grad_norm_ / clip_grad_value_, between backward and the step."""
        params = self.param_list
        if self.clip and "max_norm" in self.clip:
            torch.nn.utils.clip_grad_norm_(params, self.clip["max_norm"], self.clip["norm_type"])
        elif self.clip:
            torch.nn.utils.clip_grad_value_(params, self.clip["clip_value"])

    def optimizer_step(self):
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def schedule_state(self):
        """The schedule's position (torch's scheduler.state_dict(), copied), None without one."""
        if self.scheduler is None:
            return None
        return {k: list(v) if isinstance(v, list) else v for k, v in self.scheduler.state_dict().items()}

    def restore(self, state, optimizer_state, schedule, carried=False):
        """Set parameters, optimizer state ({"{param}.{key}": array}; a parameter without entries
        starts afresh) and the schedule's position (schedule_state()): the twin then takes the
        iteration that starts there (torch_ref/lockstep/rounding.py re-runs steps from such starts).
        `carried` (a stateful run): the per-time-step states of the batch before, whose final
        states the recurrent modules carry into this one (None: zeros; False: leave them)."""
        if carried is not False and self.layered:
            self.model.carry_from(carried)
        self.load_state_dict(state)
        by_param = {}
        for flat, value in (optimizer_state or {}).items():
            name, _, key = flat.rpartition(".")
            by_param.setdefault(name, {})[key] = value
        for name, p in self.params.items():
            self.optimizer.state.pop(p, None)
            if name in by_param:
                self.optimizer.state[p] = {
                    key: (torch.tensor(float(np.asarray(v)), dtype=_step_dtype()) if key in ("step", "mu_product")
                          else torch.tensor(np.array(v), dtype=self.dtype, device=self.device))
                    for key, v in by_param[name].items()}
        if schedule is not None:
            self.scheduler.load_state_dict(dict(schedule))
            for group, lr in zip(self.optimizer.param_groups, schedule["_last_lr"]):
                group["lr"] = lr

    def load_state_dict(self, state):
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                t.copy_(torch.as_tensor(np.asarray(state[name])))

    def state_dict(self):
        """Copies (not views) of every parameter and buffer, as numpy, under state_dict names."""
        return {name: _numpy(t) for name, t in self.state.items()}

    def carried_state(self):
        """The state each recurrent module carries into the next batch ([run] stateful), as numpy
        copies: {"layers.1.h_n": (L·D, N, H), "layers.1.c_n": ... (LSTM)}; {} where none is carried
        (finite differences start a stateful iteration's forward pass from it)."""
        out = {}
        for name, m in (self.model.recurrent.items() if self.layered else ()):
            if m.carry and m.hx is not None:
                parts = m.hx if isinstance(m.hx, tuple) else (m.hx,)
                out.update({f"{name}.{key}": _numpy(t) for key, t in zip(("h_n", "c_n"), parts)})
        return out

    def optimizer_tensors(self):
        """torch.optim's per-parameter state tensors as {"{param}.{key}": tensor}, e.g.
        "layers.0.weight.exp_avg" (the live tensors, not copies)."""
        out = {}
        for name, p in self.params.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(value):
                    out[f"{name}.{key}"] = value
        return out

    def optimizer_state(self):
        """torch.optim's per-parameter state as {"{param}.{key}": array}, copies."""
        return {name: _numpy(t) for name, t in self.optimizer_tensors().items()}

    def tensor(self, a):
        """A float tensor in the run's dtype; integer arrays (class-index targets) become int64, as
        torch's cross_entropy and nll_loss require."""
        if np.asarray(a).dtype.kind in "iu":
            return torch.as_tensor(a, dtype=torch.int64, device=self.device)
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def step(self, x, y, masks=None):
        """One plain torch training iteration (`--only twin`): no deltas kept, nothing copied out.
        Returns the loss before the update, as a tensor (no device synchronisation)."""
        if self.layered:
            self.model.set_masks(masks, self.device)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(self.tensor(x), keep_deltas=False), self.tensor(y))
        loss.backward()
        self.clip_grads()
        self.optimizer_step()
        return loss.detach()

    def train_step(self, x, y, masks=None):
        """One training iteration: the result every implementation's train_step returns (numpy),
        with "forward" (each module's output) and "buffers" (their names) for a layer list."""
        if self.layered:
            return self.layered_step(x, y, masks)
        output = self.model(self.tensor(x), keep_deltas=False)
        loss = self.loss_fn(output, self.tensor(y))
        # One backward pass gives autograd's dE/dnet for every layer (the deltas) and dE/dp for
        # every parameter; p.grad = dE/dp is what zero_grad() then loss.backward() would leave.
        nets, params = self.model.nets, self.param_list
        grads = torch.autograd.grad(loss, [*nets, *params], materialize_grads=True)
        for p, g in zip(params, grads[len(nets):]):
            p.grad = g
        self.clip_grads()
        k = len(nets)
        before = self._read([loss.detach(), output.detach(), *grads[:k], *(p.grad for p in params)])
        self.optimizer_step()
        optim = self.optimizer_tensors()
        after = self._copy_state(list(optim.values()))
        return {
            "schedule": self.schedule_state(),  # where the next iteration starts in it (None without one)
            "output": before[1],
            "loss": float(before[0]),
            "deltas": dict(zip(self.delta_names, before[2:2 + k])),
            "grads": dict(zip(self.params, before[2 + k:])),
            "optimizer_state": dict(zip(optim, after[:len(optim)])),
            "state_dict": dict(zip(self.state, after[len(optim):])),
        }

    def layered_step(self, x, y, masks):
        """train_step of a layer list: every module's output (forward hooks) and dE/d(output)."""
        self.model.set_masks(masks, self.device)
        x = self.tensor(x)
        if self.grad_input and x.is_floating_point():
            x.requires_grad_(True)  # (the tracked outputs are the modules', never the input itself)
        output = self.model(x)
        loss = self.loss_fn(output, self.tensor(y))
        nets, params = self.model.nets, self.param_list
        tracked = [t for t in nets if t.requires_grad]  # (an Identity first passes the data through)
        grads = torch.autograd.grad(loss, [*tracked, *params], materialize_grads=True)
        by_id = {id(t): g for t, g in zip(tracked, grads)}
        deltas = [by_id[id(t)] if t.requires_grad else torch.zeros_like(t) for t in nets]
        for p, g in zip(params, grads[len(tracked):]):
            p.grad = g
        self.clip_grads()
        k = len(nets)
        # the recurrent modules' per-time-step states and their gradients (twin/recurrent.py's probe)
        states, grad_states = self.model.probe_states(dict(zip(self.delta_names, deltas)))
        before = self._read([loss.detach(), output.detach(), *(t.detach() for t in nets), *deltas,
                             *(p.grad for p in params), *states.values(), *grad_states.values()])
        self.optimizer_step()
        optim = self.optimizer_tensors()
        after = self._copy_state(list(optim.values()))
        probed = before[len(before) - len(states) - len(grad_states):]
        return {
            **({"states": dict(zip(states, probed[:len(states)])),
                "grad_states": dict(zip(grad_states, probed[len(states):]))} if states else {}),
            "schedule": self.schedule_state(),
            "forward": dict(zip(self.delta_names, before[2:2 + k])),
            "output": before[1],
            "loss": float(before[0]),
            "deltas": dict(zip(self.delta_names, before[2 + k:2 + 2 * k])),
            "grads": dict(zip(self.params, before[2 + 2 * k:2 + 2 * k + len(params)])),
            "optimizer_state": dict(zip(optim, after[:len(optim)])),
            "state_dict": dict(zip(self.state, after[len(optim):])),
            "buffers": self.buffers,
        }

    def eval(self, x):
        """The evaluation pass ([run] eval_every): the output on x with the model in eval mode
        (model.eval(): running statistics, no dropout), under torch.no_grad(), then model.train()."""
        self.model.eval()
        try:
            with torch.no_grad():
                return _numpy(self.model(self.tensor(x), keep_deltas=False))
        finally:
            self.model.train()

    def _read(self, tensors):
        """Numpy arrays of tensors made in this step, none requiring grad. On the CPU they are
        views, not copies: these tensors are new at every step and nothing writes to them again
        (torch.optim never changes a .grad in place; if it did, the tests would see it, since
        every optimizer's gradients are compared with the manual side's)."""
        if self.on_cpu:
            return [t.numpy() for t in tensors]
        return [_numpy(t) for t in tensors]

    def _copy_state(self, optim):
        """Copies of the optimizer's state tensors and of the state_dict, which the next step
        changes in place (on the CPU through numpy views made once: a tensor's own conversion
        costs several times the copy)."""
        if not self.on_cpu:
            return [_numpy(t) for t in [*optim, *self.state.values()]]
        return [t.numpy().copy() for t in optim] + [a.copy() for a in self.state_arrays]


def _step_dtype():
    """The dtype torch.optim keeps its `step` counters in (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _numpy(t):
    """A numpy copy of a tensor (a view would change with the next step)."""
    t = t.detach()
    return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()


def prepare_device(device):
    """Check the device exists; on CUDA switch TF32 off so float32 means float32."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("run.device", "cuda requested but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
