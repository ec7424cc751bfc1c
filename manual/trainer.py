"""The manual side of the lockstep, behind the interface any implementation can provide:

    load_state_dict(state)  state: {"layers.{k}.weight": (out, in), "layers.{k}.bias": (out,) or ()}
    train_step(x, y) -> {"output": (N, C), "loss": float,          forward pass, before the update
                                                               ((N, T, C) per time step, y (N, T))
                         "deltas": {"layers.{k}": (N, out)},       dE/dnet_k, before the update
                         "grads": {name: array},                   before the update, after clipping
                         "optimizer_state": {"{name}.{buffer}": array}, after the update
                         "state_dict": {name: array}}              after the update

A network given as a layer list (manual/layered.py) has the same interface with torch's
nn.Sequential names (`layers.0.weight`, `layers.1.running_mean`, `layers.4.body.0.weight`), and

    train_step(x, y, masks=None) -> also "forward": {"layers.{i}": module i's output}, in module
                         order; "deltas" are dE/d(module output), last module first; "state_dict"
                         holds the buffers too (running statistics, after this forward's update).
                         masks: {"layers.{i}": bool keep-mask} for the dropout modules (handed in
                         by the lockstep when the network has dropout; None: each draws its own).
                         "states", "grad_states": {"layers.{i}.h": (L, D, T, N, H)}: a recurrent
                         module's per-time-step states and their total gradients (optional).
    eval(x) -> (N, C)      optional: the output in eval mode (running statistics, no dropout) on
                         the held-out batch x, no gradient, nothing updated ([run] eval_every).
"""
import numpy as np

from .clip_grad import clip_grad_norm_, clip_grad_value_
from .embedding import TimeSteps
from .losses import make_loss
from .layered import Layered
from .modules import MLP, substitute
from .optim import optimizer_class
from .param_groups import make_grouped
from .penalty import make_penalty
from .schedules import make_scheduler


def over_time_steps(loss, network):
    """The loss over every time step (embedding.TimeSteps: (N, T, C) flattened to (N·T, C)) where the
    network's output is (T, C) per sample; otherwise the loss itself."""
    return TimeSteps(loss) if len(network.get("output_shape", ())) == 2 else loss


class Trainer:
    """One MLP, its loss and its optimizer, built from a parsed network description (a dict).

    `replace` maps a component the description names (a layer, activation, loss, optimizer or
    schedule class) to a stand-in built in its place: manual.modules.substitute, the hook through
    which torch_ref/zoo/mistakes.py plants one mistake. None (the engine): what the description names."""

    def __init__(self, desc, replace=None):
        net, opt = desc["network"], dict(desc["optimizer"])
        self.dtype = np.dtype(desc["run"]["dtype"])
        self.layered = "layers" in net
        if self.layered:
            self.model = substitute(Layered, replace)(net["layers"], self.dtype, replace)
            self.model.set_carry(bool(desc["run"].get("stateful")))  # [run] stateful: recurrent state carried
        else:
            self.model = MLP(net["sizes"], net["activation"], net["bias"], self.dtype, net.get("activation_args"),
                             replace)
        self.loss_fn = over_time_steps(make_loss(net["loss"], net.get("loss_args"), replace), net)
        self.params = dict(self.model.named_parameters())
        self.trained = [name for name, p in self.params.items() if p.requires_grad]  # the optimizer's order
        self.delta_names = [f"layers.{k}" for k in range(len(self.model.layers))]
        self.state_arrays = dict(self.model.named_state()) if self.layered else None  # live, parameters and buffers
        optimizer, groups = substitute(optimizer_class(opt), replace), opt.pop("param_groups", None)
        del opt["name"]

        def schedule(optimizer):
            return make_scheduler(optimizer, desc.get("scheduler"), desc, replace)
        if groups:  # [[optimizer.param_groups]]: one optimizer and schedule per group, in the groups' order
            self.optimizer, self.scheduler, self.trained = make_grouped(optimizer, schedule, groups, self.params)
        else:
            self.optimizer = optimizer([self.params[n] for n in self.trained], **opt)
            self.scheduler = schedule(self.optimizer)
        self.penalty = make_penalty(desc.get("penalty"), self.params)  # [penalty]: added to the loss
        self.clip = desc.get("clip")

    def clip_grads(self):
        """Gradient clipping between backward and the step (the `grad` stage sees clipped gradients)."""
        params = self.optimizer.params
        if self.clip and "max_norm" in self.clip:
            clip_grad_norm_(params, self.clip["max_norm"], self.clip["norm_type"])
        elif self.clip:
            clip_grad_value_(params, self.clip["clip_value"])

    def optimizer_step(self):
        """The optimizer's update, then the learning-rate schedule's step (once per iteration; a
        schedule with interval = "epoch" counts them and steps at the end of each epoch)."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def load_state_dict(self, state):
        if self.layered:
            for name, a in self.state_arrays.items():
                a[...] = state[name]
            return
        for name, p in self.params.items():
            p.data[...] = state[name]

    def state_dict(self):
        if self.layered:
            return {name: a.copy() for name, a in self.state_arrays.items()}
        return {name: p.data.copy() for name, p in self.params.items()}

    def optimizer_state(self):
        """The optimizer's per-parameter state as {"{param}.{buffer}": array}, torch's key names."""
        return {f"{name}.{key}": np.array(value, dtype=self.dtype)
                for name, state in zip(self.trained, self.optimizer.state) for key, value in state.items()}

    def load_optimizer_state(self, flat):
        """Restart the optimizer from {"{param}.{buffer}": array} (e.g. the twin's, in resync mode)."""
        for name, state in zip(self.trained, self.optimizer.state):
            state.clear()
            prefix = f"{name}."
            for key, value in flat.items():
                if key.startswith(prefix) and "." not in key[len(prefix):]:
                    buffer = key[len(prefix):]
                    state[buffer] = int(value) if buffer == "step" else np.array(value, dtype=self.dtype)

    def forward_backward(self, x, y):
        """Gradients of the loss on (x, y) into every Parameter.grad; returns (output, loss)."""
        self.optimizer.zero_grad()
        output = self.model.forward(x)
        loss = self.loss_fn.forward(output, y)
        self.model.backward(self.loss_fn.backward())
        if self.penalty is not None:  # (λ₂/2)·Σθ² + λ₁·Σ|θ| in the loss, λ₂θ + λ₁·sign(θ) in the gradients
            loss = loss + self.penalty.value()
            self.penalty.backward()
        self.clip_grads()
        return output, loss

    def step(self, x, y):
        """One plain training iteration with nothing copied out (`--only manual`); the loss before it."""
        _, loss = self.forward_backward(x, y)
        self.optimizer_step()
        return float(loss)

    def train_step(self, x, y, masks=None):
        if self.layered:
            self.model.set_masks(masks)
        output, loss = self.forward_backward(x, y)
        result = {
            "output": output,
            "loss": float(loss),
            "deltas": self.model.grad_outputs() if self.layered else dict(zip(self.delta_names, self.model.deltas)),
            "grads": {n: self.params[n].grad for n in self.trained},  # never written to once handed out
        }
        if self.layered:
            result = {"forward": self.model.outputs(), **result}
            states = self.model.states()  # recurrent modules: per-time-step states and their gradients
            if states:
                result["states"], result["grad_states"] = states, self.model.grad_states()
        self.optimizer_step()
        result["optimizer_state"] = self.optimizer_state()
        result["state_dict"] = self.state_dict()
        return result


    def eval(self, x):
        """The evaluation pass: the output on x in eval mode (batch norm with its running
        statistics, dropout the identity), no backward and no buffer updated; then back to
        training mode."""
        self.model.eval()
        carried = self.model.carried() if self.layered else {}
        try:
            return self.model.forward(x).copy()
        finally:
            self.model.train()
            for m, hx in carried.items():  # [run] stateful: the evaluation pass leaves the carried state
                m.hx = hx


def build(desc):
    """The plug-in factory for the manual engine: `manual.trainer:build`."""
    return Trainer(desc)
