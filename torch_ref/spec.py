"""The network description: read a TOML (or JSON) file, check every field, return a plain dict.

A bad description raises `SpecError` naming the field; the command turns it into one line and
exit code 2. The returned dict is normalised (defaults filled in, one activation per layer) and
is what every implementation's factory receives. This module imports neither torch nor numpy.
"""
import json
import math
import sys
import tomllib
from pathlib import Path

from .errors import SpecError, field_key, show
from .fits import check_fits, class_index_targets
from .specfile import locate, read_bundled, read_file
from .names import (ACTIVATION_ARGS, ARG_CHOICES, BIASES, DEVICES, DTYPES, GAIN_NONLINEARITIES, INIT_ALIASES,
                    INIT_BIASES, INIT_SCHEMES, INTEGER_ARGS, LOSS_ARGS, NON_NEGATIVE, OPTIMIZERS, PROBABILITY_OUTPUTS,
                    SCHEDULERS, TOY_SETS)

SECTIONS = {
    "network": {"sizes", "activation", "bias", "loss"},
    "init": {"weights", "biases", "seed", "scheme", "bias"} | {a for args in INIT_SCHEMES.values() for a in args},
    "optimizer": {"name"} | {a for args in OPTIMIZERS.values() for a in args},
    "scheduler": {"name"} | {a for args in SCHEDULERS.values() for a in args},
    "clip": {"max_norm", "norm_type", "clip_value"},
    "data": {"x", "y", "random", "toy", "batch_size", "shuffle", "shuffle_seed", "drop_last"},
    "run": {"steps", "dtype", "device"},
}
OPTIONAL_SECTIONS = ("run", "scheduler", "clip")
RUN_DEFAULTS = {"steps": 100, "dtype": "float64", "device": "cpu"}

# Limits on what a description may ask for, each refused with the field that asks (SpecError):
MAX_DEPTH = 32             # nesting of tables and lists (a valid description needs 4)
MAX_INT = 2 ** 63 - 1      # counts, sizes and seeds: what numpy's and torch's int64 hold



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
    _table(raw, "description")
    _check_depth(raw)
    for key in raw:
        if key not in SECTIONS:
            raise SpecError(field_key(key), f"unknown section; expected one of {sorted(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if section not in OPTIONAL_SECTIONS and section not in raw:
            raise SpecError(section, "missing section")
        for key in _table(raw.get(section, {}), section):
            if key not in keys:
                raise SpecError(f"{section}.{field_key(key)}", f"unknown field; expected one of {sorted(keys)}")
    network = _network(raw["network"])
    return check_fits({
        "network": network,
        "init": _init(raw["init"], network),
        "optimizer": _optimizer(raw["optimizer"]),
        "scheduler": _scheduler(raw["scheduler"]) if "scheduler" in raw else None,
        "clip": _clip(raw["clip"]) if "clip" in raw else None,
        "data": _data(raw["data"], network),
        "run": _run(raw.get("run", {})),
    })


def _network(t):
    sizes = _get(t, "network", "sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(s) and s >= 1 for s in sizes)):
        raise SpecError("network.sizes", f"expected a list of at least 2 positive integers, got {show(sizes)}")
    for k, size in enumerate(sizes):
        _integer(size, f"network.sizes[{k}]", 1)
    n_layers = len(sizes) - 1
    act = _get(t, "network", "activation")
    if isinstance(act, list):
        if len(act) != n_layers:
            raise SpecError("network.activation",
                            f"expected one item (a name, or a table with a name) for every layer, or a list"
                            f" of {n_layers} items (one per layer), got {show(act)}")
        items = [_named(a, ACTIVATION_ARGS, f"network.activation[{k}]") for k, a in enumerate(act)]
    else:
        items = [_named(act, ACTIVATION_ARGS, "network.activation")] * n_layers
    loss, loss_args = _named(_get(t, "network", "loss"), LOSS_ARGS, "network.loss")
    if loss == "bce" and items[-1][0] not in PROBABILITY_OUTPUTS:
        raise SpecError("network.loss", f"bce takes probabilities in [0, 1], which a {items[-1][0]} output layer"
                        f" does not give; end with {' or '.join(PROBABILITY_OUTPUTS)}, or use bce_with_logits")
    return {
        "sizes": list(sizes),
        "activation": [name for name, _ in items],
        "activation_args": [dict(args) for _, args in items],
        "bias": _choice(t.get("bias", "per-neuron"), BIASES, "network.bias"),
        "loss": loss,
        "loss_args": loss_args,
    }


def _named(item, table, field):
    """An activation or a loss: a name, or a table {name = ..., argument = value, ...}.
    Returns (name, {argument: value}) with every argument of `table[name]` filled in."""
    if isinstance(item, dict):
        name, given, name_field = _get(item, field, "name"), dict(item), f"{field}.name"
        del given["name"]
    else:
        name, given, name_field = item, {}, field
    if not isinstance(name, str) or name not in table:
        raise SpecError(name_field, f"unknown value {show(name)}; expected one of {list(table)}")
    defaults = table[name]
    for key in given:
        if key not in defaults:
            expected = f"expected one of {sorted(defaults)}" if defaults else "it takes none"
            raise SpecError(f"{field}.{field_key(key)}", f"not an argument of {name}; {expected}")
    return name, {key: _argument(name, key, given.get(key, default), f"{field}.{key}")
                  for key, default in defaults.items()}


def _argument(name, key, value, field):
    """One activation or loss argument, refused where torch refuses it (or where it gives inf/NaN)."""
    if key in ARG_CHOICES:
        if value == "none" and key == "reduction":
            raise SpecError(field, 'reduction "none" gives no scalar loss to backpropagate; use "mean" or "sum"')
        return _choice(value, ARG_CHOICES[key], field)
    value = _number(value, field)
    if key == "label_smoothing" and not 0.0 <= value <= 1.0:  # torch's own check
        raise SpecError(field, f"label_smoothing must be between 0.0 and 1.0, got {value}")
    if name == "smooth_l1" and key == "beta" and value < 0:
        raise SpecError(field, f"smooth_l1 does not support negative values for beta, got {value}")
    if key == "delta" and value <= 0:
        raise SpecError(field, f"huber does not support non-positive values for delta, got {value}")
    if name == "softplus" and key == "beta" and value == 0:
        raise SpecError(field, "softplus divides by beta: it must not be 0")
    return value


def _init(t, network):
    sizes, bias = network["sizes"], network["bias"]
    if "seed" in t:
        if "weights" in t or "biases" in t:
            raise SpecError("init", "give either explicit weights (and biases) or a seed, not both")
        _integer(t["seed"], "init.seed", 0)
        return {"seed": t["seed"], **_init_scheme(t)}
    for key in t:
        if key not in ("weights", "biases"):
            raise SpecError(f"init.{field_key(key)}", "only with init.seed (explicit weights need no scheme)")
    if "weights" not in t:
        raise SpecError("init", "missing: give init.weights (and init.biases) or init.seed")
    weights = t["weights"]
    if not isinstance(weights, list) or len(weights) != len(sizes) - 1:
        raise SpecError("init.weights", f"expected {len(sizes) - 1} matrices, one per layer (network.sizes = {sizes})")
    for k, w in enumerate(weights):
        _matrix(w, (sizes[k + 1], sizes[k]), f"init.weights[{k}]")
    init = {"weights": weights}
    if bias == "none":
        if "biases" in t:
            raise SpecError("init.biases", 'given, but network.bias = "none"')
        return init
    biases = _get(t, "init", "biases")
    if not isinstance(biases, list) or len(biases) != len(sizes) - 1:
        raise SpecError("init.biases", f"expected {len(sizes) - 1} entries, one per layer")
    for k, b in enumerate(biases):
        field = f"init.biases[{k}]"
        if bias == "shared-frozen":
            _number(b, field, what='a number (network.bias = "shared-frozen": one scalar per layer)')
        else:
            _vector(b, sizes[k + 1], field)
    init["biases"] = biases
    return init


def _init_scheme(t):
    """The drawn initialisation: scheme, its arguments (defaults filled in) and the biases' rule."""
    scheme = t.get("scheme", "linear-default")
    scheme = INIT_ALIASES.get(scheme, scheme) if isinstance(scheme, str) else scheme
    _choice(scheme, tuple(INIT_SCHEMES) + tuple(INIT_ALIASES), "init.scheme")
    args = INIT_SCHEMES[scheme]
    for key in t:
        if key not in ("seed", "scheme", "bias") and key not in args:
            raise SpecError(f"init.{field_key(key)}", f"not an argument of {scheme}; expected one of {sorted(args)}")
    out = {"scheme": scheme, "bias": _choice(t.get("bias", "linear-default"), INIT_BIASES, "init.bias")}
    if scheme.startswith("xavier"):
        if "gain" in t and "nonlinearity" in t:
            raise SpecError("init.gain", "give either gain or nonlinearity (gain = calculate_gain(nonlinearity, param))")
        if "param" in t and "nonlinearity" not in t:
            raise SpecError("init.param", "only with init.nonlinearity")
        out["gain"] = _number(t.get("gain", 1.0), "init.gain")
        if "nonlinearity" in t:
            out["nonlinearity"] = _choice(t["nonlinearity"], GAIN_NONLINEARITIES, "init.nonlinearity")
            out["param"] = None if "param" not in t else _number(t["param"], "init.param")
    elif scheme.startswith("kaiming"):
        out["a"] = _number(t.get("a", 0.0), "init.a")
        out["mode"] = _choice(t.get("mode", "fan_in"), ("fan_in", "fan_out"), "init.mode")
        out["nonlinearity"] = _choice(t.get("nonlinearity", "leaky_relu"), GAIN_NONLINEARITIES, "init.nonlinearity")
    return out


def _scheduler(t):
    """A learning-rate schedule stepped once per iteration; refused where torch would refuse it,
    and where it would make the learning rate negative or divide by zero."""
    _table(t, "scheduler")
    name = _choice(_get(t, "scheduler", "name"), tuple(SCHEDULERS), "scheduler.name")
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
            _integer(value, field, 1)
        else:
            value = _number(value, field)
            if value < 0:
                raise SpecError(field, f"must be >= 0, got {value}")
        args[arg] = value
    if name == "warmup" and not 0 < args["start_factor"] <= 1:  # torch.optim.lr_scheduler.LinearLR's rule
        raise SpecError("scheduler.start_factor", f"expected a number in (0, 1], got {args['start_factor']}")
    return {"name": name, **args}


def _clip(t):
    """Gradient clipping: by global norm (max_norm, norm_type) or by value (clip_value), not both."""
    _table(t, "clip")
    if ("max_norm" in t) == ("clip_value" in t):
        raise SpecError("clip", "give either max_norm (and norm_type) or clip_value")
    if "clip_value" in t:
        if "norm_type" in t:
            raise SpecError("clip.norm_type", "only with clip.max_norm")
        value = _number(t["clip_value"], "clip.clip_value")
        if value < 0:
            raise SpecError("clip.clip_value", f"must be >= 0, got {value}")
        return {"clip_value": value}
    max_norm = _number(t["max_norm"], "clip.max_norm")
    if max_norm < 0:
        raise SpecError("clip.max_norm", f"must be >= 0, got {max_norm}")
    norm_type = t.get("norm_type", 2.0)
    if norm_type in ("inf", math.inf):
        norm_type = math.inf
    else:
        norm_type = _number(norm_type, "clip.norm_type", what='a positive number or "inf"')
        if norm_type <= 0:
            raise SpecError("clip.norm_type", f'expected a positive number or "inf", got {norm_type}')
    return {"max_norm": max_norm, "norm_type": norm_type}


def _optimizer(t):
    """torch.optim's arguments, refused exactly where torch.optim's constructors refuse them."""
    name = _choice(_get(t, "optimizer", "name"), tuple(OPTIMIZERS), "optimizer.name")
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
            value = [_number(b, f"{field}[{i}]") for i, b in enumerate(value)]
            for i, b in enumerate(value):
                if not 0.0 <= b < 1.0:  # torch: "Invalid beta parameter at index i"
                    raise SpecError(f"{field}[{i}]", f"invalid beta parameter: {b} (must be in [0, 1))")
        else:
            value = _number(value, field)
            if arg in NON_NEGATIVE and value < 0:
                what = "learning rate" if arg == "lr" else f"{arg} value"
                raise SpecError(field, f"invalid {what}: {value} (must be >= 0)")
        args[arg] = value
    if name == "sgd" and args["nesterov"] and (args["momentum"] <= 0 or args["dampening"] != 0):
        raise SpecError("optimizer.nesterov", "Nesterov momentum requires a momentum and zero dampening")
    return {"name": name, **args}


def _data(t, network):
    """Samples (explicit, random or a toy set) and their order: batch_size, shuffle, drop_last."""
    order = {"shuffle": t.get("shuffle", False), "shuffle_seed": t.get("shuffle_seed", 0),
             "drop_last": t.get("drop_last", False)}
    for key in ("shuffle", "drop_last"):
        if not isinstance(order[key], bool):
            raise SpecError(f"data.{key}", f"expected true or false, got {show(order[key])}")
    _integer(order["shuffle_seed"], "data.shuffle_seed", 0)
    if "toy" in t:
        if "x" in t or "y" in t or "random" in t:
            raise SpecError("data", "give one of explicit x and y, random, or toy")
        data = {"toy": _toy(t["toy"], network), "batch_size": t.get("batch_size", 1)}
        _integer(data["batch_size"], "data.batch_size", 1)
    else:
        data = _samples({k: v for k, v in t.items() if k not in order}, network)
    n = data["toy"]["n"] if "toy" in data else data["random"]["n"] if "random" in data else len(data["x"])
    if order["drop_last"] and n < data["batch_size"]:
        raise SpecError("data.drop_last", f"{n} samples and batch_size {data['batch_size']}: no full batch to keep")
    return {**data, **order}


def _toy(t, network):
    """A classic toy set: {name, n, noise, seed}. xor, moons and circles have 2 inputs and 2 classes
    (class indices, one-hot rows, or a 0/1 column for one output); linear is a regression."""
    _table(t, "data.toy")
    for key in t:
        if key not in ("name", "n", "noise", "seed"):
            raise SpecError(f"data.toy.{field_key(key)}", "unknown field; expected name, n, noise, seed")
    name = _choice(_get(t, "data.toy", "name"), TOY_SETS, "data.toy.name")
    n, seed, noise = t.get("n", 200), t.get("seed", 0), t.get("noise", 0.1)
    _integer(n, "data.toy.n", 1)
    _integer(seed, "data.toy.seed", 0)
    noise = _number(noise, "data.toy.noise")
    if noise < 0:
        raise SpecError("data.toy.noise", f"must be >= 0, got {noise}")
    sizes, loss = network["sizes"], network["loss"]
    if name == "linear":
        if loss in ("nll", "cross_entropy", "bce", "bce_with_logits"):
            raise SpecError("data.toy.name", f"linear is a regression (real targets); network.loss = {show(loss)} needs classes")
    else:
        if sizes[0] != 2:
            raise SpecError("data.toy.name", f"{name} has 2 inputs; network.sizes[0] = {sizes[0]}")
        if sizes[-1] < 2 and loss in ("nll", "cross_entropy"):
            raise SpecError("data.toy.name", f"{name} has 2 classes; {loss} needs at least 2 outputs, got {sizes[-1]}")
    return {"name": name, "n": n, "noise": noise, "seed": seed}


def _samples(t, network):
    sizes = network["sizes"]
    batch_size = t.get("batch_size", 1)
    _integer(batch_size, "data.batch_size", 1)
    if "random" in t:
        if "x" in t or "y" in t:
            raise SpecError("data", "give either explicit x and y or random, not both")
        r = _table(t["random"], "data.random")
        for key in r:
            if key not in ("n", "seed"):
                raise SpecError(f"data.random.{field_key(key)}", "unknown field; expected n and seed")
        n, seed = _get(r, "data.random", "n"), r.get("seed", 0)
        _integer(n, "data.random.n", 1)
        _integer(seed, "data.random.seed", 0)
        return {"random": {"n": n, "seed": seed}, "batch_size": batch_size}
    x, y = _get(t, "data", "x"), _get(t, "data", "y")
    if not isinstance(x, list) or not x:
        raise SpecError("data.x", "expected a non-empty list of samples")
    _matrix(x, (len(x), sizes[0]), "data.x")
    _targets(y, len(x), network, "data.y")
    return {"x": x, "y": y, "batch_size": batch_size}


def _targets(y, n, network, field):
    """n targets that fit the loss, refused where torch would refuse them: class indices as a list
    of n integers in [0, C); (n, C) rows otherwise, within [0, 1] for bce."""
    loss, width = network["loss"], network["sizes"][-1]
    if class_index_targets(network):
        hint = (' (for probability rows, write network.loss = {name = "cross_entropy", target = "probability"})'
                if loss == "cross_entropy" else "")
        if not isinstance(y, list) or len(y) != n:
            raise SpecError(field, f"{loss} takes class indices: expected a list of {n} integers{hint}, got {show(y)}")
        for i, c in enumerate(y):
            if not _is_int(c):
                raise SpecError(f"{field}[{i}]", f"{loss} takes class indices: expected an integer{hint}, got {show(c)}")
            if not 0 <= c < width:  # torch: "Target 3 is out of bounds."
                raise SpecError(f"{field}[{i}]", f"class index {c} is out of bounds for {width} outputs"
                                f" (0 <= index < {width})")
        return
    _matrix(y, (n, width), field)
    if loss == "bce":  # torch: "all elements of target should be between 0 and 1"
        for i, row in enumerate(y):
            for j, v in enumerate(row):
                if not 0.0 <= v <= 1.0:
                    raise SpecError(f"{field}[{i}][{j}]", f"bce targets must be between 0 and 1, got {show(v)}")


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
    _integer(run["steps"], "run.steps", 1)
    _choice(run["dtype"], DTYPES, "run.dtype")
    _choice(run["device"], DEVICES, "run.device")
    return run



# --- what the run asks of the numbers and of the machine ----------------------------------------

def _check_depth(raw):
    """Refuse tables and lists nested deeper than MAX_DEPTH (a valid description needs 4), before
    anything recurses through them; walked without recursion."""
    stack = [(raw, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{field_key(p)}" for p in path[:3]).lstrip(".")
            raise SpecError(field, f"nested more than {MAX_DEPTH} levels deep (a description needs 4)")
        if isinstance(value, dict):
            stack.extend((v, path + (k,)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(value))

# --- small checkers, each raising SpecError with the field's name -------------------------------

def _table(t, field):
    if not isinstance(t, dict):
        raise SpecError(field, f"expected a table, got {type(t).__name__}")
    return t


def _get(t, section, key):
    if key not in t:
        raise SpecError(f"{section}.{key}", "missing")
    return t[key]


def _choice(value, choices, field):
    if value not in choices:
        raise SpecError(field, f"unknown value {show(value)}; expected one of {list(choices)}")
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _integer(v, field, minimum):
    """An integer >= minimum (0 or 1) that fits int64, as numpy and torch hold counts and seeds."""
    if not (_is_int(v) and v >= minimum):
        raise SpecError(field, f"expected a {'positive' if minimum else 'non-negative'} integer, got {show(v)}")
    if v > MAX_INT:
        raise SpecError(field, f"{show(v, 40)} does not fit a 64-bit integer (at most 2**63 - 1)")
    return v


def _number(v, field, what="a number"):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(field, f"expected {what}, got {show(v)}")
    try:
        value = float(v)
    except OverflowError:  # an integer of more than 309 digits
        raise SpecError(field, f"{show(v, 40)} is beyond the float range (|x| <= {sys.float_info.max:.4g})") from None
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite, got {show(v)}")
    return value


def _vector(v, n, field):
    if not isinstance(v, list) or len(v) != n:
        raise SpecError(field, f"expected a list of {n} numbers, got {show(v)}")
    for i, e in enumerate(v):
        _number(e, f"{field}[{i}]")


def _matrix(m, shape, field):
    rows, cols = shape
    if not isinstance(m, list) or len(m) != rows or not all(isinstance(r, list) for r in m):
        got = f"{len(m)} rows" if isinstance(m, list) else repr(m)
        raise SpecError(field, f"expected shape ({rows}, {cols}) as a list of {rows} rows, got {got}")
    for i, r in enumerate(m):
        if len(r) != cols:
            raise SpecError(f"{field}[{i}]", f"expected {cols} numbers (shape ({rows}, {cols})), got {len(r)}")
        for j, e in enumerate(r):
            _number(e, f"{field}[{i}][{j}]")
