"""The network description: read a TOML (or JSON) file, check every field, return a plain dict.

A bad description raises `SpecError` naming the field; the command turns it into one line and
exit code 2. The returned dict is normalised (defaults filled in, one activation per layer) and
is what every implementation's factory receives. This module imports neither torch nor numpy.
"""
import json
import math
import tomllib
from pathlib import Path

ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
LOSSES = ("half-sse", "mse")
BIASES = ("per-neuron", "shared-frozen", "none")
DTYPES = ("float64", "float32")
DEVICES = ("cpu", "cuda")
# name -> {argument: default}: torch.optim's argument names and defaults (tests compare with torch's signatures)
OPTIMIZERS = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
            "maximize": False},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
             "maximize": False},
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False,
              "maximize": False},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False,
                "maximize": False},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10,
                "maximize": False},
}
# arguments torch.optim refuses below 0 ("Invalid learning rate", "Invalid epsilon value", ...)
NON_NEGATIVE = ("lr", "momentum", "weight_decay", "eps", "alpha", "lr_decay", "initial_accumulator_value")

SECTIONS = {
    "network": {"sizes", "activation", "bias", "loss"},
    "init": {"weights", "biases", "seed"},
    "optimizer": {"name"} | {a for args in OPTIMIZERS.values() for a in args},
    "data": {"x", "y", "random", "batch_size"},
    "run": {"steps", "dtype", "device"},
}
RUN_DEFAULTS = {"steps": 100, "dtype": "float64", "device": "cpu"}


class SpecError(ValueError):
    """A description that cannot be run; `field` is the dotted name of the culprit."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def load(path):
    """Parse and validate the description file at `path` (.toml, or .json)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError("SPEC", f"cannot read {str(path)!r}: {e.strerror or e}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise SpecError("SPEC", f"{str(path)!r} is not valid {kind}: {e}") from None
    return parse(raw)


def parse(raw):
    """Validate a description given as nested dicts; return the normalised copy."""
    _table(raw, "description")
    for key in raw:
        if key not in SECTIONS:
            raise SpecError(key, f"unknown section; expected one of {sorted(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if section != "run" and section not in raw:
            raise SpecError(section, "missing section")
        for key in _table(raw.get(section, {}), section):
            if key not in keys:
                raise SpecError(f"{section}.{key}", f"unknown field; expected one of {sorted(keys)}")
    network = _network(raw["network"])
    return {
        "network": network,
        "init": _init(raw["init"], network),
        "optimizer": _optimizer(raw["optimizer"]),
        "data": _data(raw["data"], network),
        "run": _run(raw.get("run", {})),
    }


def _network(t):
    sizes = _get(t, "network", "sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(s) and s >= 1 for s in sizes)):
        raise SpecError("network.sizes", f"expected a list of at least 2 positive integers, got {sizes!r}")
    n_layers = len(sizes) - 1
    act = _get(t, "network", "activation")
    acts = [act] * n_layers if isinstance(act, str) else act
    if not isinstance(acts, list) or len(acts) != n_layers:
        raise SpecError("network.activation",
                        f"expected a name or a list of {n_layers} names (one per layer), got {act!r}")
    for a in acts:
        _choice(a, ACTIVATIONS, "network.activation")
    return {
        "sizes": list(sizes),
        "activation": list(acts),
        "bias": _choice(t.get("bias", "per-neuron"), BIASES, "network.bias"),
        "loss": _choice(_get(t, "network", "loss"), LOSSES, "network.loss"),
    }


def _init(t, network):
    sizes, bias = network["sizes"], network["bias"]
    if "seed" in t:
        if "weights" in t or "biases" in t:
            raise SpecError("init", "give either explicit weights (and biases) or a seed, not both")
        if not (_is_int(t["seed"]) and t["seed"] >= 0):
            raise SpecError("init.seed", f"expected a non-negative integer, got {t['seed']!r}")
        return {"seed": t["seed"]}
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


def _optimizer(t):
    """torch.optim's arguments, refused exactly where torch.optim's constructors refuse them."""
    name = _choice(_get(t, "optimizer", "name"), tuple(OPTIMIZERS), "optimizer.name")
    for key in t:
        if key != "name" and key not in OPTIMIZERS[name]:
            raise SpecError(f"optimizer.{key}",
                            f"not an argument of {name}; expected one of {sorted(OPTIMIZERS[name])}")
    args = {}
    for arg, default in OPTIMIZERS[name].items():
        value, field = t.get(arg, default), f"optimizer.{arg}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise SpecError(field, f"expected true or false, got {value!r}")
        elif arg == "betas":
            if not (isinstance(value, list) and len(value) == 2):
                raise SpecError(field, f"expected a list of 2 numbers, got {value!r}")
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
    sizes = network["sizes"]
    batch_size = t.get("batch_size", 1)
    if not (_is_int(batch_size) and batch_size >= 1):
        raise SpecError("data.batch_size", f"expected a positive integer, got {batch_size!r}")
    if "random" in t:
        if "x" in t or "y" in t:
            raise SpecError("data", "give either explicit x and y or random, not both")
        r = _table(t["random"], "data.random")
        for key in r:
            if key not in ("n", "seed"):
                raise SpecError(f"data.random.{key}", "unknown field; expected n and seed")
        n, seed = _get(r, "data.random", "n"), r.get("seed", 0)
        if not (_is_int(n) and n >= 1):
            raise SpecError("data.random.n", f"expected a positive integer, got {n!r}")
        if not (_is_int(seed) and seed >= 0):
            raise SpecError("data.random.seed", f"expected a non-negative integer, got {seed!r}")
        return {"random": {"n": n, "seed": seed}, "batch_size": batch_size}
    x, y = _get(t, "data", "x"), _get(t, "data", "y")
    if not isinstance(x, list) or not x:
        raise SpecError("data.x", "expected a non-empty list of samples")
    _matrix(x, (len(x), sizes[0]), "data.x")
    _matrix(y, (len(x), sizes[-1]), "data.y")
    return {"x": x, "y": y, "batch_size": batch_size}


def _run(t):
    run = {**RUN_DEFAULTS, **t}
    if not (_is_int(run["steps"]) and run["steps"] >= 1):
        raise SpecError("run.steps", f"expected a positive integer, got {run['steps']!r}")
    _choice(run["dtype"], DTYPES, "run.dtype")
    _choice(run["device"], DEVICES, "run.device")
    return run


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
        raise SpecError(field, f"unknown value {value!r}; expected one of {list(choices)}")
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v, field, what="a number"):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(field, f"expected {what}, got {v!r}")
    if not math.isfinite(v):
        raise SpecError(field, f"must be finite, got {v!r}")
    return float(v)


def _vector(v, n, field):
    if not isinstance(v, list) or len(v) != n:
        raise SpecError(field, f"expected a list of {n} numbers, got {v!r}")
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
