"""The twin's optimizer and learning-rate schedule, made from the description with torch.optim
and torch.optim.lr_scheduler's own classes (by manual/names.py's registry), and the one rule
torch has no class for: ε inside the square root (`eps_inside_sqrt = true` for rmsprop and
adagrad). Those two variants are small torch.optim.Optimizer subclasses below, written from the
rule, and are the reference for it (tests/test_optim_variants.py holds them to a hand formula).

A schedule with `interval = "epoch"` is stepped once per pass over the training set (PerEpoch;
the manual side's manual/schedules.py does the same count)."""
from functools import partial

import torch

from manual.names import OPTIMIZER_REGISTRY, SCHEDULER_REGISTRY, build, resolve
from manual import schedules
from manual.schedules import iterations_per_epoch, schedule_arguments

OPTIMIZERS = resolve(OPTIMIZER_REGISTRY, torch.optim)
SCHEDULERS = resolve(SCHEDULER_REGISTRY, torch.optim.lr_scheduler)


class RMSpropEpsInside(torch.optim.RMSprop):
    """torch.optim.RMSprop's rule, with d = √(v + ε) (centered: √(v − ḡ² + ε)) instead of √v + ε;
    the same state (step, square_avg, grad_avg, momentum_buffer)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            a, eps, mu = group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["square_avg"] = torch.zeros_like(p)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] += 1
                v = state["square_avg"].mul_(a).addcmul_(g, g, value=1 - a)
                if group["centered"]:
                    g_avg = state["grad_avg"].lerp_(g, 1 - a)
                    d = v.addcmul(g_avg, g_avg, value=-1).add_(eps).sqrt_()
                else:
                    d = v.add(eps).sqrt_()
                if mu > 0:
                    b = state["momentum_buffer"].mul_(mu).addcdiv_(g, d)
                    p.add_(b, alpha=-group["lr"])
                else:
                    p.addcdiv_(g, d, value=-group["lr"])


class AdagradEpsInside(torch.optim.Adagrad):
    """torch.optim.Adagrad's rule, with θ ← θ − γ_t g / √(s + ε) instead of g / (√s + ε); the
    same state (step, sum)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                state["step"] += 1
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                clr = group["lr"] / (1 + (state["step"].item() - 1) * group["lr_decay"])
                s = state["sum"].addcmul_(g, g, value=1)
                p.addcdiv_(g, s.add(group["eps"]).sqrt_(), value=-clr)


EPS_INSIDE_SQRT = {name: partial(build, OPTIMIZER_REGISTRY[name], cls)
                   for name, cls in (("rmsprop", RMSpropEpsInside), ("adagrad", AdagradEpsInside))}


def make_optimizer(params, args):
    """torch.optim's optimizer from the description's optimizer section ({"name", argument...});
    with eps_inside_sqrt = true, its variant above."""
    args = dict(args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    name = args.pop("name")
    return (EPS_INSIDE_SQRT[name] if args.get("eps_inside_sqrt") else OPTIMIZERS[name])(params, **args)


class PerEpoch(schedules.PerEpoch):
    """manual's PerEpoch (the schedule stepped once every `iterations` calls of step()) over torch's
    schedule, whose state_dict() is the schedule's with the count of iterations ("iterations_seen"),
    so that a restart resumes both."""

    def state_dict(self):
        return {**self.scheduler.state_dict(), "iterations_seen": self.count}

    def load_state_dict(self, state):
        state = dict(state)
        self.count = state.pop("iterations_seen")
        self.scheduler.load_state_dict(state)


def make_scheduler(optimizer, args, desc=None):
    """torch.optim.lr_scheduler's schedule for the description's scheduler section, or None
    (`desc`, the whole description, is needed only for interval = "epoch")."""
    if not args:
        return None

    def make(section):
        return SCHEDULERS[section["name"]](optimizer, **schedule_arguments(section, make))

    scheduler = make(args)
    if args.get("interval") == "epoch":
        return PerEpoch(scheduler, iterations_per_epoch(desc))
    return scheduler
