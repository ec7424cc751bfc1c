"""The training sections of a description: [optimizer] (torch.optim's arguments), [scheduler]
(a torch.optim.lr_scheduler schedule) and [clip] (gradient clipping), each refused where torch
would refuse it."""
import math

from manual.expression import Expression, ExpressionError

from ..errors import SpecError, field_key, show
from .names import INTEGER_ARGS, NON_NEGATIVE, OPTIMIZERS, SCHEDULERS
from .checks import choice, get, integer, number, table


# the range of a schedule's number argument (torch's own rules, and no division by zero): (low, high,
# low included, high included); every other number is >= 0
FACTOR_RANGES = {"start_factor": (0, 1, False, True), "end_factor": (0, 1, True, True),
                 "factor": (0, 1, False, True), "pct_start": (0, 1, True, True),
                 "div_factor": (0, math.inf, False, False), "final_div_factor": (0, math.inf, False, False)}
INTERVALS = ("step", "epoch")  # a schedule stepped after every iteration, or after every pass over the data
NOT_IN_SEQUENCE = ("SequentialLR", "OneCycleLR")  # (OneCycleLR sets the optimizer's lr and momentum itself)


def check_scheduler(t, where="scheduler"):
    """A learning-rate schedule, by torch's class name (or an alias), stepped once per iteration
    or, with interval = "epoch", once per pass over the training set; refused where torch would
    refuse it, and where it would make the learning rate negative or divide by zero."""
    table(t, where)
    name = choice(get(t, where, "name"), tuple(SCHEDULERS), f"{where}.name")
    for key in t:
        if key not in ("name", "interval") and key not in SCHEDULERS[name]:
            raise SpecError(f"{where}.{field_key(key)}", f"not an argument of {name}; expected one of {sorted(SCHEDULERS[name])}")
    args = {}
    for arg, default in SCHEDULERS[name].items():
        field = f"{where}.{arg}"
        if default is None and arg not in t:
            raise SpecError(field, f"missing (required by {name})")
        args[arg] = schedule_argument(arg, t.get(arg, default), field)
    if name == "warmup" and not 0 < args["start_factor"] <= 1:  # torch.optim.lr_scheduler.LinearLR's rule
        raise SpecError(f"{where}.start_factor", f"expected a number in (0, 1], got {args['start_factor']}")
    if name == "SequentialLR":
        check_sequence(args, where)
    if name == "OneCycleLR":
        check_one_cycle(args, where)
    if "interval" in t:
        if where != "scheduler":
            raise SpecError(f"{where}.interval", "only in [scheduler] itself (the sequence is stepped as a whole)")
        if choice(t["interval"], INTERVALS, "scheduler.interval") == "epoch":
            args["interval"] = "epoch"
    return {"name": name, **args}


def schedule_argument(arg, value, field):
    """One argument of a schedule, checked by its kind (its name)."""
    if arg in ("cycle_momentum", "three_phase"):
        if not isinstance(value, bool):
            raise SpecError(field, f"expected true or false, got {show(value)}")
        return value
    if arg == "anneal_strategy":
        return choice(value, ("cos", "linear"), field)
    if arg == "lr_lambda":
        return check_expression(value, field)
    if arg == "milestones":
        if not isinstance(value, list):
            raise SpecError(field, f"expected a list of increasing positive integers, got {show(value)}")
        for i, m in enumerate(value):
            integer(m, f"{field}[{i}]", 1)
            if i and m <= value[i - 1]:
                raise SpecError(f"{field}[{i}]", f"milestones must increase, got {m} after {value[i - 1]}")
        return list(value)
    if arg == "schedulers":
        if not isinstance(value, list) or not value:
            raise SpecError(field, f"expected a list of schedule tables, got {show(value)}")
        return [check_scheduler(s, f"{field}[{i}]") for i, s in enumerate(value)]
    if arg in INTEGER_ARGS:
        integer(value, field, 1)
        return value
    value = number(value, field)
    low, high, low_in, high_in = FACTOR_RANGES.get(arg, (0, math.inf, True, True))
    if value < low or value > high or (value == low and not low_in) or (value == high and not high_in):
        span = f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
        raise SpecError(field, f"must be >= 0, got {value}" if span == "[0, inf]" else f"expected a number in {span}, got {value}")
    return value


def check_expression(value, field):
    """LambdaLR's lr_lambda: an arithmetic expression of `step` (manual/expression.py), parsed here
    so that a malformed one is refused naming the field and the position."""
    if not isinstance(value, str):
        raise SpecError(field, f"expected an expression of step as a string, e.g. \"1 / (1 + 0.01 * step)\", got {show(value)}")
    try:
        Expression(value)
    except ExpressionError as e:
        raise SpecError(field, f"at position {e.position}: {e}") from None
    return value


def check_sequence(args, where):
    """SequentialLR: one milestone fewer than schedules (torch's rule); schedules of one level."""
    for i, s in enumerate(args["schedulers"]):
        if s["name"] in NOT_IN_SEQUENCE:
            raise SpecError(f"{where}.schedulers[{i}].name", f"{s['name']} cannot be part of a SequentialLR here")
    if len(args["milestones"]) != len(args["schedulers"]) - 1:
        raise SpecError(f"{where}.milestones", f"expected {len(args['schedulers']) - 1} milestone(s), one fewer than"
                                               f" the {len(args['schedulers'])} schedulers, got {len(args['milestones'])}")


def one_cycle_phase_ends(args):
    """The last step of each of OneCycleLR's phases, as torch computes them."""
    total, pct = args["total_steps"], args["pct_start"]
    ends = [pct * total - 1, total - 1]
    return ends[:1] + [2 * pct * total - 2] + ends[1:] if args["three_phase"] else ends


def check_one_cycle(args, where):
    """OneCycleLR: no phase of zero length (torch would divide by zero in it)."""
    start = 0
    for end in one_cycle_phase_ends(args):
        if end == start:
            raise SpecError(f"{where}.pct_start", f"{args['pct_start']} of total_steps = {args['total_steps']} makes a"
                                                  f" phase of zero length (torch divides by zero in it)")
        start = end


def check_schedule_run(sched, optimizer, steps):
    """What a schedule needs of the optimizer and the run's length: OneCycleLR's cycle_momentum an
    optimizer with momentum or betas, and total_steps >= run.steps (torch refuses to step beyond
    it); LambdaLR's expression a finite value >= 0 at every step of the run."""
    if sched["name"] == "OneCycleLR":
        if sched["cycle_momentum"] and not ({"momentum", "betas"} & set(OPTIMIZERS[optimizer["name"]])):
            raise SpecError("scheduler.cycle_momentum", f"{optimizer['name']} has neither momentum nor betas to cycle;"
                                                        " give cycle_momentum = false")
        if sched.get("interval") != "epoch" and sched["total_steps"] < steps:
            raise SpecError("scheduler.total_steps", f"{sched['total_steps']} is fewer than run.steps = {steps}"
                                                     " (torch refuses to step beyond total_steps)")
    for i, s in enumerate([sched] + sched.get("schedulers", [])):
        if s["name"] == "LambdaLR":
            check_lambda_values(s["lr_lambda"], "scheduler.lr_lambda" if not i else
                                f"scheduler.schedulers[{i - 1}].lr_lambda", steps)


def check_lambda_values(text, field, steps):
    """The expression is a finite number >= 0 at every step 0..steps."""
    f = Expression(text)
    for t in range(steps + 1):
        try:
            value = f(t)
        except ExpressionError as e:
            raise SpecError(field, str(e)) from None
        if value < 0:
            raise SpecError(field, f"at step {t}: {value}, a negative learning rate factor")


def check_clip(t):
    """Gradient clipping: by global norm (max_norm, norm_type) or by value (clip_value), not both."""
    table(t, "clip")
    if ("max_norm" in t) == ("clip_value" in t):
        raise SpecError("clip", "give either max_norm (and norm_type) or clip_value")
    if "clip_value" in t:
        if "norm_type" in t:
            raise SpecError("clip.norm_type", "only with clip.max_norm")
        value = number(t["clip_value"], "clip.clip_value")
        if value < 0:
            raise SpecError("clip.clip_value", f"must be >= 0, got {value}")
        return {"clip_value": value}
    max_norm = number(t["max_norm"], "clip.max_norm")
    if max_norm < 0:
        raise SpecError("clip.max_norm", f"must be >= 0, got {max_norm}")
    norm_type = t.get("norm_type", 2.0)
    if norm_type in ("inf", math.inf):
        norm_type = math.inf
    else:
        norm_type = number(norm_type, "clip.norm_type", what='a positive number or "inf"')
        if norm_type <= 0:
            raise SpecError("clip.norm_type", f'expected a positive number or "inf", got {norm_type}')
    return {"max_norm": max_norm, "norm_type": norm_type}


def check_optimizer(t):
    """torch.optim's arguments, refused exactly where torch.optim's constructors refuse them."""
    name = choice(get(t, "optimizer", "name"), tuple(OPTIMIZERS), "optimizer.name")
    for key in t:
        if key != "name" and key not in OPTIMIZERS[name]:
            raise SpecError(f"optimizer.{field_key(key)}",
                            f"not an argument of {name}; expected one of {sorted(OPTIMIZERS[name])}")
    args = {}
    for arg, default in OPTIMIZERS[name].items():
        value, field = t.get(arg, default), f"optimizer.{arg}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise SpecError(field, f"expected true or false, got {show(value)}")
        elif arg == "betas":
            if not (isinstance(value, list) and len(value) == 2):
                raise SpecError(field, f"expected a list of 2 numbers, got {show(value)}")
            value = [number(b, f"{field}[{i}]") for i, b in enumerate(value)]
            for i, b in enumerate(value):
                if not 0.0 <= b < 1.0:  # torch: "Invalid beta parameter at index i"
                    raise SpecError(f"{field}[{i}]", f"invalid beta parameter: {b} (must be in [0, 1))")
        else:
            value = number(value, field)
            if arg in NON_NEGATIVE and value < 0:
                what = "learning rate" if arg == "lr" else f"{arg} value"
                raise SpecError(field, f"invalid {what}: {value} (must be >= 0)")
        args[arg] = value
    if "rho" in args and args["rho"] > 1:  # torch: "Invalid rho value"
        raise SpecError("optimizer.rho", f"invalid rho value: {args['rho']} (must be in [0, 1])")
    if name == "sgd" and args["nesterov"] and (args["momentum"] <= 0 or args["dampening"] != 0):
        raise SpecError("optimizer.nesterov", "Nesterov momentum requires a momentum and zero dampening")
    return {"name": name, **args}
