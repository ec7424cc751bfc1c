"""The training sections of a description: [optimizer] (torch.optim's arguments), [scheduler]
(a torch.optim.lr_scheduler schedule) and [clip] (gradient clipping), each refused where torch
would refuse it."""
import math

from ..errors import SpecError, field_key, show
from .names import INTEGER_ARGS, NON_NEGATIVE, OPTIMIZERS, SCHEDULERS
from .checks import choice, get, integer, number, table


def check_scheduler(t):
    """A learning-rate schedule stepped once per iteration; refused where torch would refuse it,
    and where it would make the learning rate negative or divide by zero."""
    table(t, "scheduler")
    name = choice(get(t, "scheduler", "name"), tuple(SCHEDULERS), "scheduler.name")
    for key in t:
        if key != "name" and key not in SCHEDULERS[name]:
            raise SpecError(f"scheduler.{field_key(key)}", f"not an argument of {name}; expected one of {sorted(SCHEDULERS[name])}")
    args = {}
    for arg, default in SCHEDULERS[name].items():
        field = f"scheduler.{arg}"
        if default is None and arg not in t:
            raise SpecError(field, f"missing (required by {name})")
        value = t.get(arg, default)
        if arg in INTEGER_ARGS:
            integer(value, field, 1)
        else:
            value = number(value, field)
            if value < 0:
                raise SpecError(field, f"must be >= 0, got {value}")
        args[arg] = value
    if name == "warmup" and not 0 < args["start_factor"] <= 1:  # torch.optim.lr_scheduler.LinearLR's rule
        raise SpecError("scheduler.start_factor", f"expected a number in (0, 1], got {args['start_factor']}")
    return {"name": name, **args}


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
    if name == "sgd" and args["nesterov"] and (args["momentum"] <= 0 or args["dampening"] != 0):
        raise SpecError("optimizer.nesterov", "Nesterov momentum requires a momentum and zero dampening")
    return {"name": name, **args}
