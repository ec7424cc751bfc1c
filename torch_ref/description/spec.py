"""The network description: read a TOML (or JSON) file, check every field, return a plain dict.

A bad description raises `SpecError` naming the field; the command turns it into one line and
exit code 2. The returned dict is normalised (defaults filled in, one activation per layer) and
is what every implementation's factory receives. This module imports neither torch nor numpy.

Here: reading the file, the sections and their fields, and [run] (with `override`, the command's
--steps/--dtype/--device). Each section's checks are in spec_network.py ([network], [init]),
spec_training.py ([optimizer], [scheduler], [clip]), groups.py ([[optimizer.param_groups]],
[penalty]) and spec_data.py ([data]); the small checkers
they share in spec_checks.py. The tables of names are names.py's, re-exported here.
"""
import json
import tomllib
from pathlib import Path

from ..errors import SpecError, field_key, show
from .fits import check_fits
from .names import (ACTIVATION_ARGS, ARG_CHOICES, BIASES, DEVICES, DTYPES, GAIN_NONLINEARITIES,  # noqa: F401
                    INIT_ALIASES, INIT_BIASES, INIT_SCHEMES, INTEGER_ARGS, LOSS_ARGS, NON_NEGATIVE, OPTIMIZERS,
                    PROBABILITY_OUTPUTS, SCHEDULERS, TOY_SETS, IMAGE_SETS)
from .checks import MAX_DEPTH, MAX_INT, check_depth, choice, integer, table  # noqa: F401
from .data import check_data
from .layers import RECURRENT_TYPES
from .network import check_init, check_network
from .training import check_clip, check_optimizer, check_scheduler
from .groups import check_loss_scale, check_param_groups, check_penalty
from .files import locate, read_bundled, read_file

SECTIONS = {
    "network": {"sizes", "activation", "bias", "loss", "input_shape", "layers"},
    "init": {"weights", "biases", "values", "seed", "scheme", "bias"} | {a for args in INIT_SCHEMES.values() for a in args},
    "optimizer": {"name", "param_groups"} | {a for args in OPTIMIZERS.values() for a in args},
    "penalty": {"l1", "l2", "params"},
    "scheduler": {"name", "interval"} | {a for args in SCHEDULERS.values() for a in args},
    "clip": {"max_norm", "norm_type", "clip_value"},
    "data": {"x", "y", "random", "toy", "images", "sequence", "batch_size", "shuffle", "shuffle_seed", "drop_last", "holdout"},
    "run": {"steps", "dtype", "device", "eval_every", "stateful"},
}
OPTIONAL_SECTIONS = ("run", "scheduler", "clip", "penalty")
RUN_DEFAULTS = {"steps": 100, "dtype": "float64", "device": "cpu"}


def load(path):
    """Parse and validate the description at `path` (.toml, or .json): a file, or where no file of
    that name exists, a bundled description named with or without its suffix (`locate`)."""
    path = locate(path)
    text = read_file(path) if isinstance(path, Path) else read_bundled(path)
    kind = "JSON" if path.name.endswith(".json") else "TOML"
    try:
        raw = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise SpecError("SPEC", f"{show(str(path))} is not valid {kind}: {e}") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise SpecError("SPEC", f"{show(str(path))}: {kind} nested too deeply (more than a description"
                                f" can have: {MAX_DEPTH} levels)") from None
    return parse(raw)


def parse(raw):
    """Validate a description given as nested dicts; return the normalised copy."""
    table(raw, "description")
    check_depth(raw)
    for key in raw:
        if key not in SECTIONS:
            raise SpecError(field_key(key), f"unknown section; expected one of {sorted(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if section not in OPTIONAL_SECTIONS and section not in raw:
            raise SpecError(section, "missing section")
        for key in table(raw.get(section, {}), section):
            if key not in keys:
                raise SpecError(f"{section}.{field_key(key)}", f"unknown field; expected one of {sorted(keys)}")
    network = check_network(raw["network"])
    check_loss_scale(network)
    optimizer = check_optimizer({k: v for k, v in raw["optimizer"].items() if k != "param_groups"})
    desc = {
        "network": network,
        "init": check_init(raw["init"], network),
        "optimizer": check_param_groups(raw["optimizer"], optimizer, network),
        "penalty": check_penalty(raw["penalty"], network) if "penalty" in raw else None,
        "scheduler": check_scheduler(raw["scheduler"]) if "scheduler" in raw else None,
        "clip": check_clip(raw["clip"]) if "clip" in raw else None,
        "data": check_data(raw["data"], network),
        "run": _run(raw.get("run", {})),
    }
    check_evaluation(desc)
    check_stateful(desc)
    return check_fits(desc)


def check_evaluation(desc):
    """[run] eval_every (the evaluation pass) is for a network given as layers, the only form with an
    eval mode; [data] holdout (its batch) only with it."""
    if "eval_every" in desc["run"] and "layers" not in desc["network"]:
        raise SpecError("run.eval_every", "the evaluation pass compares eval mode (running statistics, no"
                                          " dropout), which a network given as layers has; the MLP form has none")
    if "holdout" in desc["data"] and "eval_every" not in desc["run"]:
        raise SpecError("data.holdout", "the held-out samples are the evaluation pass's batch: give run.eval_every"
                                        " too (or leave holdout out)")


def check_stateful(desc):
    """[run] stateful (this project's; default false): every recurrent module starts each batch from
    the previous batch's final state, the graph cut between batches. true or false; true needs a
    recurrent module (RNN, LSTM, GRU) in network.layers."""
    if "stateful" not in desc["run"]:
        return
    value = desc["run"]["stateful"]
    if not isinstance(value, bool):
        raise SpecError("run.stateful", f"expected true or false, got {show(value)}")
    if value and not any(m["type"] in RECURRENT_TYPES for m in _all_modules(desc["network"].get("layers", []))):
        raise SpecError("run.stateful", f"carries the state of a recurrent module ({', '.join(RECURRENT_TYPES)}) "
                                        "across batches; network.layers has none")


def _all_modules(layers):
    """Every module of a normalised layer list, a Residual's body too."""
    for m in layers:
        yield m
        yield from _all_modules(m.get("layers", []) if m["type"] == "Residual" else [])


def override(desc, steps=None, dtype=None, device=None):
    """`desc` with [run] values replaced (None keeps the description's), checked as the file's are,
    then against the dtype's range and the machine's memory (the command's --steps/--dtype/--device,
    the Python API's keywords)."""
    raw = {**desc["run"], **{k: v for k, v in (("steps", steps), ("dtype", dtype), ("device", device))
                             if v is not None}}
    desc["run"] = _run(raw)
    return check_fits(desc)


def _run(t):
    run = {**RUN_DEFAULTS, **t}
    integer(run["steps"], "run.steps", 1)
    choice(run["dtype"], DTYPES, "run.dtype")
    choice(run["device"], DEVICES, "run.device")
    if "eval_every" in run:
        integer(run["eval_every"], "run.eval_every", 1)
    return run
