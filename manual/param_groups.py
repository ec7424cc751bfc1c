"""Parameter groups, as torch.optim has them (the description's [[optimizer.param_groups]]): one
optimizer of the description's kind per group, each with its group's arguments, stepped together.

torch keeps the groups in one optimizer (`optimizer.param_groups[i]["lr"]`, ...); the update of a
parameter depends only on its own group's arguments and its own state, so one optimizer per group
computes the same. A learning-rate schedule scales every group from its own base rate, as torch's
do: one schedule per group (`Schedules`).
"""


class ParamGroups:
    """Several optimizers behind one optimizer's interface: params and state (in group order, the
    same dicts as the groups' own), zero_grad, step, and `lr` (the first group's, for a reader that
    knows one group)."""

    def __init__(self, optimizers):
        self.groups = list(optimizers)
        self.params = [p for opt in self.groups for p in opt.params]
        self.state = [s for opt in self.groups for s in opt.state]

    @property
    def lr(self):
        return self.groups[0].lr

    def zero_grad(self, set_to_none=True):
        for opt in self.groups:
            opt.zero_grad(set_to_none)

    def step(self):
        for opt in self.groups:
            opt.step()


class Schedules:
    """One learning-rate schedule per parameter group, stepped together."""

    def __init__(self, schedules):
        self.schedules = list(schedules)

    def step(self):
        for s in self.schedules:
            s.step()

    def get_last_lr(self):
        return [lr for s in self.schedules for lr in s.get_last_lr()]


def make_grouped(optimizer, schedule, groups, params):
    """(ParamGroups, Schedules or None, the parameters' names in the optimizer's order): `optimizer`
    (a class taking torch's arguments) made for each group ({"params": names, argument...}) over
    `params` ({name: Parameter}); `schedule(optimizer)` makes each group's schedule (or None)."""
    opts = [optimizer([params[n] for n in g["params"]], **{k: v for k, v in g.items() if k != "params"})
            for g in groups]
    grouped = ParamGroups(opts)
    made = [schedule(opt) for opt in opts]
    schedules = Schedules(made) if made and made[0] is not None else None
    return grouped, schedules, [n for g in groups for n in g["params"]]
