"""The [network] and [init] sections of a description: sizes, activations and the loss (each a
name or a table of torch's arguments, checked against the registry's), the bias mode, and the
initial parameters (explicit, or a seed and a torch.nn.init scheme)."""
from ..errors import SpecError, field_key, show
from .names import (ACTIVATION_ARGS, ARG_CHOICES, BIASES, GAIN_NONLINEARITIES, INIT_ALIASES, INIT_BIASES,
                    INIT_SCHEMES, LOSS_ARGS, PROBABILITY_OUTPUTS)
from .checks import choice, get, integer, is_int, matrix, number, table, vector
from .layers import check_layers, check_values


def check_network(t):
    """The MLP form (sizes, activation, bias) or the layer list (input_shape, layers: layers.py),
    exclusive; the loss either way."""
    if "layers" in t or "input_shape" in t:
        loss, loss_args = _named(get(t, "network", "loss"), LOSS_ARGS, "network.loss")
        network = check_layers(t, {"loss": loss, "loss_args": loss_args})
        if loss == "bce" and network["layers"][-1]["type"] not in ("Sigmoid", "Softmax"):
            raise SpecError("network.loss", "bce takes probabilities in [0, 1]; end the layers with Sigmoid or "
                                            "Softmax, or use bce_with_logits")
        return network
    sizes = get(t, "network", "sizes")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(is_int(s) and s >= 1 for s in sizes)):
        raise SpecError("network.sizes", f"expected a list of at least 2 positive integers, got {show(sizes)}")
    for k, size in enumerate(sizes):
        integer(size, f"network.sizes[{k}]", 1)
    n_layers = len(sizes) - 1
    act = get(t, "network", "activation")
    if isinstance(act, list):
        if len(act) != n_layers:
            raise SpecError("network.activation",
                            f"expected one item (a name, or a table with a name) for every layer, or a list"
                            f" of {n_layers} items (one per layer), got {show(act)}")
        items = [_named(a, ACTIVATION_ARGS, f"network.activation[{k}]") for k, a in enumerate(act)]
    else:
        items = [_named(act, ACTIVATION_ARGS, "network.activation")] * n_layers
    loss, loss_args = _named(get(t, "network", "loss"), LOSS_ARGS, "network.loss")
    if loss == "bce" and items[-1][0] not in PROBABILITY_OUTPUTS:
        raise SpecError("network.loss", f"bce takes probabilities in [0, 1], which a {items[-1][0]} output layer"
                        f" does not give; end with {' or '.join(PROBABILITY_OUTPUTS)}, or use bce_with_logits")
    return {
        "sizes": list(sizes),
        "activation": [name for name, _ in items],
        "activation_args": [dict(args) for _, args in items],
        "bias": choice(t.get("bias", "per-neuron"), BIASES, "network.bias"),
        "loss": loss,
        "loss_args": loss_args,
    }


def _named(item, registry, field):
    """An activation or a loss: a name, or a table {name = ..., argument = value, ...}.
    Returns (name, {argument: value}) with every argument of `registry[name]` filled in."""
    if isinstance(item, dict):
        name, given, name_field = get(item, field, "name"), dict(item), f"{field}.name"
        del given["name"]
    else:
        name, given, name_field = item, {}, field
    if not isinstance(name, str) or name not in registry:
        raise SpecError(name_field, f"unknown value {show(name)}; expected one of {list(registry)}")
    defaults = registry[name]
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
        if value == "mean" and name == "half-sse":
            raise SpecError(field, 'half-sse is a sum: "sum" (the default) or "batch-mean" (the sum over the batch\'s N)')
        return choice(value, ARG_CHOICES[key], field)
    if key == "ignore_index":  # a class index that contributes nothing (torch's default -100)
        if not is_int(value) or abs(value) > 2 ** 63 - 1:
            raise SpecError(field, f"expected an integer (a class index whose targets are ignored), got {show(value)}")
        return value
    value = number(value, field)
    if key == "label_smoothing" and not 0.0 <= value <= 1.0:  # torch's own check
        raise SpecError(field, f"label_smoothing must be between 0.0 and 1.0, got {value}")
    if name == "smooth_l1" and key == "beta" and value < 0:
        raise SpecError(field, f"smooth_l1 does not support negative values for beta, got {value}")
    if key == "delta" and value <= 0:
        raise SpecError(field, f"huber does not support non-positive values for delta, got {value}")
    if name == "softplus" and key == "beta" and value == 0:
        raise SpecError(field, "softplus divides by beta: it must not be 0")
    return value


def check_init(t, network):
    if "layers" in network:
        return _layered_init(t, network)
    if "values" in t:
        raise SpecError("init.values", "values by parameter name are for a network given as layers; the MLP "
                                       "form takes init.weights and init.biases")
    sizes, bias = network["sizes"], network["bias"]
    if "seed" in t:
        if "weights" in t or "biases" in t:
            raise SpecError("init", "give either explicit weights (and biases) or a seed, not both")
        integer(t["seed"], "init.seed", 0)
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
        matrix(w, (sizes[k + 1], sizes[k]), f"init.weights[{k}]")
    init = {"weights": weights}
    if bias == "none":
        if "biases" in t:
            raise SpecError("init.biases", 'given, but network.bias = "none"')
        return init
    biases = get(t, "init", "biases")
    if not isinstance(biases, list) or len(biases) != len(sizes) - 1:
        raise SpecError("init.biases", f"expected {len(sizes) - 1} entries, one per layer")
    for k, b in enumerate(biases):
        field = f"init.biases[{k}]"
        if bias == "shared-frozen":
            number(b, field, what='a number (network.bias = "shared-frozen": one scalar per layer)')
        else:
            vector(b, sizes[k + 1], field)
    init["biases"] = biases
    return init


def _init_scheme(t):
    """The drawn initialisation: scheme, its arguments (defaults filled in) and the biases' rule."""
    scheme = t.get("scheme", "linear-default")
    scheme = INIT_ALIASES.get(scheme, scheme) if isinstance(scheme, str) else scheme
    choice(scheme, tuple(INIT_SCHEMES) + tuple(INIT_ALIASES), "init.scheme")
    args = INIT_SCHEMES[scheme]
    for key in t:
        if key not in ("seed", "scheme", "bias") and key not in args:
            raise SpecError(f"init.{field_key(key)}", f"not an argument of {scheme}; expected one of {sorted(args)}")
    out = {"scheme": scheme, "bias": choice(t.get("bias", "linear-default"), INIT_BIASES, "init.bias")}
    if scheme.startswith("xavier"):
        if "gain" in t and "nonlinearity" in t:
            raise SpecError("init.gain", "give either gain or nonlinearity (gain = calculate_gain(nonlinearity, param))")
        if "param" in t and "nonlinearity" not in t:
            raise SpecError("init.param", "only with init.nonlinearity")
        out["gain"] = number(t.get("gain", 1.0), "init.gain")
        if "nonlinearity" in t:
            out["nonlinearity"] = choice(t["nonlinearity"], GAIN_NONLINEARITIES, "init.nonlinearity")
            out["param"] = None if "param" not in t else number(t["param"], "init.param")
    elif scheme.startswith("kaiming"):
        out["a"] = number(t.get("a", 0.0), "init.a")
        out["mode"] = choice(t.get("mode", "fan_in"), ("fan_in", "fan_out"), "init.mode")
        out["nonlinearity"] = choice(t.get("nonlinearity", "leaky_relu"), GAIN_NONLINEARITIES, "init.nonlinearity")
    return out


def _layered_init(t, network):
    """[init] of a layer list: a seed (torch's default initialisation of each module, or a scheme
    for the weights of Linear and the convolutions) and/or `values`, {parameter name: nested list},
    which replace drawn ones (without a seed they must give every parameter)."""
    for key in ("weights", "biases"):
        if key in t:
            raise SpecError(f"init.{key}", "the MLP form's field; a network given as layers takes init.values = "
                                           "{\"layers.0.weight\" = [...], ...} (or init.seed)")
    out = {}
    if "seed" in t:
        integer(t["seed"], "init.seed", 0)
        out = {"seed": t["seed"], **_init_scheme({k: v for k, v in t.items() if k != "values"})}
    elif set(t) - {"values"}:
        raise SpecError(f"init.{field_key(sorted(set(t) - {'values'})[0])}", "only with init.seed")
    if "values" in t:
        out["values"] = check_values(table(t["values"], "init.values"), network, every="seed" not in t)
    elif "seed" not in t:
        raise SpecError("init", "missing: give init.seed, or init.values for every parameter")
    return out
