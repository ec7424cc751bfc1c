"""The layer-list form of [network]: `input_shape` and `layers`, a list of torch.nn modules.

    [network]
    input_shape = [1, 12, 12]        # one sample, without the batch axis
    layers = [{type = "Conv2d", out_channels = 4, kernel_size = 3, padding = 1}, {type = "ReLU"}, ...]

`type` is torch.nn's class name (manual/names.py's LAYER_REGISTRY), the other keys that class's
constructor arguments with torch's names and defaults. The input-size argument (LAYER_INPUT:
in_features, in_channels, num_features, normalized_shape, num_channels) may be left out: it is
inferred from the previous module's output shape; given and inconsistent, it is refused naming
`network.layers[i].field` and both shapes. `Residual` (x + body(x)) holds its own `layers`.
RNN, LSTM and GRU take (T, input_size) per sample and give (T, D·hidden_size); they must be
batch-first (the data are (N, T, features)), with dropout and proj_size 0 (`_check_recurrent`);
LastStep takes the last time step.

Shapes are propagated module by module through the manual engine's own module on a batch of two
zero samples (numpy: the formulas are torch's, and no torch is imported before a run; an Embedding,
always first, gets int64 zeros, a valid token id), so an
argument torch would refuse (a kernel larger than its padded input, groups that do not divide the
channels...) is refused here, naming the module's field. The normalised layers carry every
argument (defaults and inferred sizes filled in) and are what both sides build.
"""
import math

from ..errors import SpecError, field_key, show
from .checks import get, is_int, table

MAX_LAYERS = 1000  # modules in one list (a description of more is a mistake, not a network)
RECURRENT_TYPES = ("RNN", "LSTM", "GRU")  # input (T, input_size) per sample, output (T, D·hidden_size)


def check_layers(t, loss_item):
    """The layer-list [network] section: returns the normalised network (input_shape, layers,
    output_shape, sizes = [input features, outputs] as the data sees them, dropout: {module name: {p, mask_shape}}, loss)."""
    from manual.names import LAYER_REGISTRY  # noqa: F401  (the registry: no numpy needed)
    for key in ("sizes", "activation", "bias"):
        if key in t:
            raise SpecError(f"network.{key}", "the MLP form's field; a network given as `layers` takes its "
                                              "modules' own arguments (give either sizes or layers)")
    shape = get(t, "network", "input_shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3 and all(is_int(s) and 1 <= s <= 1 << 24 for s in shape)):
        raise SpecError("network.input_shape", f"expected 1 to 3 positive integers (one sample: (features,), "
                                               f"(C, L) or (C, H, W)), got {show(shape)}")
    dropout = {}
    layers, out = _check_list(get(t, "network", "layers"), tuple(shape), "network.layers", dropout)
    per_step = len(out) == 2 and (loss_item["loss"] == "nll" or (loss_item["loss"] == "cross_entropy" and
                                                                 loss_item["loss_args"]["target"] == "index"))
    if len(out) != 1 and not per_step:  # (T, C): class indices per time step, the loss over every step
        raise SpecError("network.layers", f"the last module's output has shape {list(out)} per sample; the loss "
                                          "takes (N, C) (or (N, T, C) with class indices per time step): end with"
                                          " Flatten and Linear, say")
    return {"input_shape": list(shape), "layers": layers, "output_shape": list(out),
            "sizes": [math.prod(shape), out[-1]], "dropout": dropout, **loss_item}


def module_types(layers, prefix="layers"):
    """{module name: type} of a normalised layer list, nested ones included ("layers.4.body.0")."""
    out = {}
    for i, m in enumerate(layers):
        out[f"{prefix}.{i}"] = m["type"]
        if m["type"] == "Residual":
            out.update(module_types(m["layers"], f"{prefix}.{i}.body"))
    return out


def _check_list(items, shape, field, dropout, prefix="layers"):
    """(normalised modules, output shape per sample) of a list of modules taking `shape`."""
    if not isinstance(items, list) or not items:
        raise SpecError(field, f"expected a non-empty list of modules ({{type = \"Linear\", ...}}), got {show(items)}")
    if len(items) > MAX_LAYERS:
        raise SpecError(field, f"{len(items)} modules; at most {MAX_LAYERS}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "Embedding" and (i or prefix != "layers"):
            raise SpecError(f"{field}[{i}].type", "an Embedding takes integer token ids, the network's input: it must"
                                                  " be the first module of network.layers")
        module, out_shape = _check_module(item, shape, f"{field}[{i}]", dropout, f"{prefix}.{i}")
        if module["type"] in ("Dropout", "Dropout2d"):  # the keep-mask per sample: the input's, or (C,)
            dropout[f"{prefix}.{i}"] = {"p": module["p"], "mask_shape": list(shape if module["type"] == "Dropout"
                                                                               else shape[:1])}
        out.append(module)
        shape = out_shape
    return out, shape


def _check_module(item, shape, field, dropout, name):
    """One module: its type, its arguments (unknown ones refused, defaults filled in, the input
    size inferred or checked) and its output shape, by building it and running two zero samples.
    `dropout` collects the dropout modules ({name: {p, mask_shape}}), nested ones too."""
    from manual.names import LAYER_INPUT, LAYER_REGISTRY, REQUIRED
    table(item, field)
    kind = get(item, field, "type")
    if not isinstance(kind, str) or kind not in LAYER_REGISTRY:
        raise SpecError(f"{field}.type", f"unknown module {show(kind)}; expected one of {list(LAYER_REGISTRY)}")
    defaults = LAYER_REGISTRY[kind].args
    for key in item:
        if key != "type" and key not in defaults:
            expected = f"expected one of {sorted(defaults)}" if defaults else "it takes none"
            raise SpecError(f"{field}.{field_key(key)}", f"not an argument of {kind}; {expected}")
    if kind == "Residual":
        body, out = _check_list(get(item, field, "layers"), shape, f"{field}.layers", dropout, f"{name}.body")
        if out != shape:
            raise SpecError(f"{field}.layers", f"the body maps shape {list(shape)} to {list(out)}; x + body(x) "
                                               "needs the same shape")
        return {"type": kind, "layers": body}, shape
    args = {key: item.get(key, default) for key, default in defaults.items()}
    if kind in RECURRENT_TYPES:
        _check_recurrent(kind, args, shape, field)
    inferred = LAYER_INPUT.get(kind)
    if inferred:
        args[inferred] = _input_size(kind, inferred, item.get(inferred), shape, field)
    for key, value in args.items():
        if value == REQUIRED:
            raise SpecError(f"{field}.{key}", f"missing: {kind} requires it")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{field}.{key}", f"must be finite, got {show(value)}")
    if kind in ATTENTION:
        _check_attention(kind, args, shape, field)
    return {"type": kind, **args}, _output_shape(kind, args, shape, field)


def _check_recurrent(kind, args, shape, field):
    """An RNN, LSTM or GRU in a layer list: batch-first (the samples are (N, T, features)), no
    dropout between layers (a mask no description hands in) and no projection, and an input of
    (T, features) per sample."""
    if args.get("batch_first") is not True:
        raise SpecError(f"{field}.batch_first", f"{show(args.get('batch_first'))}: the samples are (N, T, features) "
                                                f"in a layer list; give batch_first = true")
    if args.get("dropout", 0) != 0:
        raise SpecError(f"{field}.dropout", f"{show(args['dropout'])}: {kind}'s dropout between layers draws masks "
                                            "no description hands in; give 0 (or a Dropout module after it)")
    if args.get("proj_size", 0) != 0:
        raise SpecError(f"{field}.proj_size", f"{show(args['proj_size'])}: LSTM with projections is not "
                                              "supported; give 0")
    if len(shape) != 2:
        raise SpecError(f"{field}.input_size", f"the previous module's output has shape {list(shape)} per sample; "
                                               f"{kind} takes (T, input_size) per sample, the input of shape "
                                               f"[T, features] (network.input_shape = [T, features] to start with one)")


def _input_size(kind, key, given, shape, field):
    """The input-size argument `key` of `kind` from the input shape (one sample); a given value
    that differs is refused with both shapes."""
    if kind == "Linear" or kind in RECURRENT_TYPES or kind in ATTENTION:  # the features: the last axis
        inferred = shape[-1]
    elif kind == "LayerNorm":  # the whole sample, or as many trailing axes as given
        n = len(given) if isinstance(given, list) and given else 1 if is_int(given) else len(shape)
        inferred = list(shape[len(shape) - n:]) if not is_int(given) else shape[-1]
    else:
        inferred = shape[0]
    if given is not None and given != inferred:
        raise SpecError(f"{field}.{key}", f"{show(given)} does not fit the input: the previous module's output "
                                          f"has shape {list(shape)} per sample, so {key} = {show(inferred)}")
    return inferred


ATTENTION = ("MultiheadAttention", "TransformerEncoderLayer")  # self-attention over (T, E) samples


def _check_attention(kind, args, shape, field):
    """What a layer list's self-attention needs that torch would not refuse: samples of (T, E),
    batch first, no dropout (it would drop attention weights, which no handed mask reaches), the
    heads dividing E, only the arguments manual/attention.py supports."""
    heads, width = ("num_heads", "embed_dim") if kind == "MultiheadAttention" else ("nhead", "d_model")
    if len(shape) != 2:
        raise SpecError(field, f"{kind} takes samples of shape (T, E), a sequence of T positions of E features; "
                               f"its input has shape {list(shape)} per sample")
    if args["batch_first"] is not True:
        raise SpecError(f"{field}.batch_first", f"{show(args['batch_first'])}: the samples are (N, T, features), "
                                                "batch first: give batch_first = true")
    if not is_int(args[heads]) or args[heads] < 1:
        raise SpecError(f"{field}.{heads}", f"expected a positive integer, got {show(args[heads])}")
    if args[width] % args[heads]:
        raise SpecError(f"{field}.{heads}", f"{args[heads]} heads do not divide {width} = {args[width]} "
                                            f"(each head takes {width} / {heads} features)")
    if args["dropout"] != 0:
        raise SpecError(f"{field}.dropout", f"{show(args['dropout'])}: give dropout = 0 (torch's dropout here "
                                            "also drops attention weights, which no mask handed to both sides reaches; "
                                            "torch's default is 0.1)")
    if args["causal"] not in (True, False):
        raise SpecError(f"{field}.causal", f"expected true or false, got {show(args['causal'])}")
    fixed = {"add_bias_kv": False, "add_zero_attn": False, "kdim": None, "vdim": None} \
        if kind == "MultiheadAttention" else {}
    for key, only in fixed.items():
        if args[key] != only and args[key] != (args[width] if key in ("kdim", "vdim") else only):
            raise SpecError(f"{field}.{key}", f"{show(args[key])} is not supported: self-attention takes "
                                              f"{key} = {show(only) if only is not None else 'its default'}")
    if kind == "TransformerEncoderLayer" and args["activation"] not in ("relu", "gelu"):
        raise SpecError(f"{field}.activation", f"expected \"relu\" or \"gelu\", got {show(args['activation'])}")


def _output_shape(kind, args, shape, field):
    """The output shape per sample of module `kind` on inputs of `shape`: the manual module built
    from `args` and run on two zero samples (its errors, torch's, name the module)."""
    import numpy as np

    from manual.layered import make_module
    if kind in ("Flatten", "Unflatten"):
        dim = args["start_dim"] if kind == "Flatten" else args["dim"]
        if is_int(dim) and dim % (len(shape) + 1) == 0:
            raise SpecError(f"{field}.{'start_dim' if kind == 'Flatten' else 'dim'}",
                            f"{dim} is the batch axis; a module keeps it (axis 1 is the sample's first)")
    if kind == "Embedding":
        _check_embedding(args, field)
    if kind in ("Softmax", "LogSoftmax") and args["dim"] is None:
        args["dim"] = 1  # torch's implicit choice for inputs of 2 or 4 axes; made explicit (no warning)
    try:
        module = make_module(kind, args, np.float64)
        module.train()
        zeros = np.zeros((2,) + tuple(shape), np.int64 if kind == "Embedding" else np.float64)  # (id 0 is valid)
        y = module.forward_in_list(zeros)  # what a layer list passes on
    except (ValueError, TypeError, IndexError) as e:
        raise SpecError(field, f"{kind} on inputs of shape {list(shape)} per sample: {' '.join(str(e).split())}") from None
    if y.ndim < 2 or y.shape[0] != 2:
        raise SpecError(field, f"{kind} gives shape {list(y.shape[1:])}; a module keeps the batch axis")
    return tuple(int(s) for s in y.shape[1:])


def _check_embedding(args, field):
    """Embedding's arguments: sizes positive integers, padding_idx within them (negative from the
    end, as torch's), max_norm and sparse at torch's defaults (not offered)."""
    for key in ("num_embeddings", "embedding_dim"):
        if not (is_int(args[key]) and args[key] >= 1):
            raise SpecError(f"{field}.{key}", f"expected a positive integer, got {show(args[key])}")
    pad, n = args["padding_idx"], args["num_embeddings"]
    if pad is not None and not (is_int(pad) and -n <= pad < n):
        raise SpecError(f"{field}.padding_idx", f"must be an integer within num_embeddings ({-n} <= padding_idx < {n}),"
                                                f" got {show(pad)}")
    if args["max_norm"] is not None:
        raise SpecError(f"{field}.max_norm", "not offered (torch renormalises the looked-up rows in place during "
                                             "forward); leave it out")
    if args["sparse"] is not False:
        raise SpecError(f"{field}.sparse", "sparse gradients are not offered; leave it out")
    if not isinstance(args["scale_grad_by_freq"], bool):
        raise SpecError(f"{field}.scale_grad_by_freq", f"expected true or false, got {show(args['scale_grad_by_freq'])}")


def state_shapes(network):
    """{state-dict name: shape} of a layer list's parameters and buffers, in torch's order (the
    manual model built at zero), and the names of the parameters among them."""
    import numpy as np

    from manual.layered import Layered
    model = Layered(network["layers"], np.float64)
    return ({name: tuple(np.shape(v)) for name, v in model.named_state()},
            [name for name, _ in model.named_parameters()])


def check_values(values, network, every):
    """init.values: {state-dict name: a nested list of that tensor's shape}; with `every`, each
    parameter must be given (no seed draws the others)."""
    shapes, params = state_shapes(network)
    for name, value in values.items():
        field = f"init.values.{field_key(name)}"
        if name not in shapes:
            raise SpecError(field, f"not a parameter or buffer of this network; expected one of {list(shapes)}")
        got = _nested_shape(value, field)
        if got != shapes[name]:
            raise SpecError(field, f"shape {list(got)}; {name} has shape {list(shapes[name])}")
    missing = [name for name in params if name not in values]
    if every and missing:
        raise SpecError(f"init.values.{field_key(missing[0])}", "missing: without init.seed every parameter "
                                                                "needs a value")
    return {name: values[name] for name in shapes if name in values}


def _nested_shape(value, field):
    """The shape of a number or of nested equal-length lists of finite numbers."""
    if isinstance(value, list):
        if not value:
            raise SpecError(field, "an empty list")
        inner = [_nested_shape(v, f"{field}[{i}]") for i, v in enumerate(value)]
        if any(s != inner[0] for s in inner):
            raise SpecError(field, f"ragged: rows of shapes {sorted(set(map(list, inner)))[:2]}")
        return (len(value),) + inner[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(field, f"expected a finite number, got {show(value)}")
    return ()
