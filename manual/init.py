"""Initial parameters, drawn in numpy: the manual side decides them and the twin copies them."""
import math

import numpy as np


def linear_default(sizes, bias, seed):
    """torch.nn.Linear's default initialisation, drawn from numpy's generator `seed`.

        W ~ U(−1/√fan_in, 1/√fan_in)  (kaiming_uniform with a = √5)      (fan_out, fan_in)
        b ~ U(−1/√fan_in, 1/√fan_in)                                      (fan_out,) or ()
    """
    rng = np.random.default_rng(seed)
    state = {}
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(fan_in)
        state[f"layers.{k}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in))
        if bias == "per-neuron":
            state[f"layers.{k}.bias"] = rng.uniform(-bound, bound, fan_out)
        elif bias == "shared-frozen":
            state[f"layers.{k}.bias"] = np.asarray(rng.uniform(-bound, bound))
    return state


GAIN_ONE = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d",
            "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain: the factor that keeps activations' variance through a layer.

        linear, identity, sigmoid   1     (and torch's conv and conv_transpose names, 1 too)
        tanh                        5/3
        relu                        √2
        leaky_relu                  √(2 / (1 + slope²)),  slope = param (0.01 when None)
        selu                        3/4
    """
    if nonlinearity in GAIN_ONE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def weight_sampler(init):
    """(rng, fan_in, fan_out) -> a (fan_out, fan_in) weight matrix, for an init scheme (torch.nn.init's):

        xavier_uniform    U(−a, a),  a = gain · √(6 / (fan_in + fan_out))
        xavier_normal     N(0, σ²),  σ = gain · √(2 / (fan_in + fan_out))
        kaiming_uniform   U(−b, b),  b = √3 · gain / √fan,  gain = calculate_gain(nonlinearity, a)
        kaiming_normal    N(0, σ²),  σ = gain / √fan,       fan = fan_in or fan_out (mode)

    xavier's gain is `gain`, or calculate_gain(nonlinearity, param) when a nonlinearity is named.
    """
    scheme = init["scheme"]
    if scheme.startswith("xavier"):
        gain = calculate_gain(init["nonlinearity"], init["param"]) if "nonlinearity" in init else init["gain"]
        if scheme == "xavier_uniform":
            return lambda rng, fi, fo: rng.uniform(-1, 1, (fo, fi)) * (gain * math.sqrt(6.0 / (fi + fo)))
        return lambda rng, fi, fo: rng.normal(0.0, gain * math.sqrt(2.0 / (fi + fo)), (fo, fi))
    gain = calculate_gain(init["nonlinearity"], init["a"])
    fan = (lambda fi, fo: fi) if init["mode"] == "fan_in" else (lambda fi, fo: fo)
    if scheme == "kaiming_uniform":
        return lambda rng, fi, fo: rng.uniform(-1, 1, (fo, fi)) * (math.sqrt(3.0) * gain / math.sqrt(fan(fi, fo)))
    return lambda rng, fi, fo: rng.normal(0.0, gain / math.sqrt(fan(fi, fo)), (fo, fi))


def scheme_init(sizes, bias, init):
    """Weights from a torch.nn.init scheme, drawn layer by layer from numpy's generator init["seed"];
    biases as torch.nn.Linear draws them, U(−1/√fan_in, 1/√fan_in) (init.bias = "linear-default"),
    or zeros (init.bias = "zeros"); one scalar per layer for a shared-frozen bias."""
    rng = np.random.default_rng(init["seed"])
    draw = weight_sampler(init)
    state = {}
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        state[f"layers.{k}.weight"] = draw(rng, fan_in, fan_out)
        if bias == "none":
            continue
        shape = (fan_out,) if bias == "per-neuron" else ()
        if init["bias"] == "zeros":
            state[f"layers.{k}.bias"] = np.zeros(shape)
        else:
            bound = 1.0 / np.sqrt(fan_in)
            state[f"layers.{k}.bias"] = np.asarray(rng.uniform(-bound, bound, shape))
    return state


def initial_state(desc):
    """The run's initial state_dict (float64 numpy arrays), from explicit values or a seed."""
    net, init = desc["network"], desc["init"]
    if "layers" in net:
        return layered_state(net["layers"], init)
    if "seed" in init:
        if init.get("scheme", "linear-default") != "linear-default":
            return scheme_init(net["sizes"], net["bias"], init)
        state = linear_default(net["sizes"], net["bias"], init["seed"])
        if init.get("bias") == "zeros":
            state.update({k: np.zeros_like(v) for k, v in state.items() if k.endswith(".bias")})
        return state
    state = {}
    for k, w in enumerate(init["weights"]):
        state[f"layers.{k}.weight"] = np.array(w, dtype=np.float64)
        if net["bias"] != "none":
            state[f"layers.{k}.bias"] = np.array(init["biases"][k], dtype=np.float64)
    return state


def fan_in_and_fan_out(shape):
    """torch.nn.init._calculate_fan_in_and_fan_out: (size(1) · receptive field, size(0) · receptive
    field) of a weight of `shape` (a ConvTranspose's (in, out/groups, k...) counts as torch counts it)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def draw_weight(rng, init, shape):
    """A weight of `shape` drawn by the scheme `init` (weight_sampler's formulas, torch's fans)."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if init.get("scheme", "linear-default") == "linear-default":  # kaiming_uniform(a=√5): U(±1/√fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape)
    return _scheme_tensor(rng, init, shape, fan_in, fan_out)


def _scheme_tensor(rng, init, shape, fan_in, fan_out):
    """weight_sampler's draw (the same numbers for a matrix) for a tensor of any shape, torch's fans."""
    scheme = init["scheme"]
    if scheme.startswith("xavier"):
        gain = calculate_gain(init["nonlinearity"], init["param"]) if "nonlinearity" in init else init["gain"]
        if scheme == "xavier_uniform":
            return rng.uniform(-1, 1, shape) * (gain * math.sqrt(6.0 / (fan_in + fan_out)))
        return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), shape)
    gain = calculate_gain(init["nonlinearity"], init["a"])
    fan = fan_in if init["mode"] == "fan_in" else fan_out
    if scheme == "kaiming_uniform":
        return rng.uniform(-1, 1, shape) * (math.sqrt(3.0) * gain / math.sqrt(fan))
    return rng.normal(0.0, gain / math.sqrt(fan), shape)


DRAWN = ("Linear", "Conv1d", "Conv2d", "ConvTranspose2d")  # torch draws these modules' parameters


def embedding_weight(rng, shape, padding_idx):
    """torch.nn.Embedding's reset_parameters: N(0, 1), the padding row zero (whatever the scheme,
    which is for the weights of Linear and the convolutions)."""
    w = rng.standard_normal(shape)
    if padding_idx is not None:
        w[padding_idx] = 0.0
    return w


def layered_state(layers, init):
    """The initial state_dict of a layer list (manual/layered.py), in torch's order: each Linear and
    convolution's weight then bias drawn module by module from numpy's generator init["seed"]
    (torch's reset_parameters: U(±1/√fan_in) for both; a scheme for the weight; init.bias "zeros"),
    an Embedding's weight N(0, 1) with its padding row zero,
    normalisation weights 1 and biases 0, running means 0, variances 1, num_batches_tracked 0;
    init["values"] replace drawn values by name. RNN, LSTM and GRU draw as torch's reset_parameters:
    every parameter U(±1/√hidden_size), in named_parameters order, whatever the scheme (biases
    zero with init.bias "zeros"). MultiheadAttention and TransformerEncoderLayer: attention_default."""
    from .layered import Layered, walk
    from .rnn import RNNBase
    model = Layered(layers, np.float64)
    rng = np.random.default_rng(init.get("seed", 0))
    state = {name: np.array(value, dtype=value.dtype) for name, value in model.named_state()}
    if "seed" in init:
        for name, module, _, _ in walk(model.layers):
            if isinstance(module, RNNBase):
                state.update(recurrent_default(rng, name, module, init.get("bias") == "zeros"))
            if type(module).__name__ in ATTENTION_DRAWN:
                state.update(attention_default(rng, name, module, init))
            if type(module).__name__ == "Embedding":
                state[f"{name}.weight"] = embedding_weight(rng, module.weight.data.shape, module.padding_idx)
                continue
            if type(module).__name__ not in DRAWN:
                continue
            w = state[f"{name}.weight"] = draw_weight(rng, init, module.weight.data.shape)
            if module.bias is not None:
                bound = 1.0 / math.sqrt(fan_in_and_fan_out(w.shape)[0])
                bias = rng.uniform(-bound, bound, module.bias.data.shape)
                state[f"{name}.bias"] = np.zeros_like(bias) if init.get("bias") == "zeros" else bias
    for name, value in init.get("values", {}).items():
        state[name] = np.array(value, dtype=state[name].dtype)
    return state


def recurrent_default(rng, name, module, zero_bias=False):
    """torch's RNNBase.reset_parameters for the recurrent module `name`: every parameter drawn from
    U(−1/√H, 1/√H), H = hidden_size, one after the other in torch's order; {state name: array}."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    out = {}
    for pname, p in module.named_parameters():
        value = rng.uniform(-bound, bound, p.data.shape)
        out[f"{name}.{pname}"] = np.zeros_like(value) if zero_bias and pname.startswith("bias") else value
    return out
ATTENTION_DRAWN = ("MultiheadAttention", "TransformerEncoderLayer")


def linear_state(rng, name, linear, init):
    """{state name: array} of one Linear `name`, drawn as layered_state draws a Linear (the scheme's
    weight, U(±1/√fan_in) bias or zeros with init.bias "zeros")."""
    out = {f"{name}.weight": draw_weight(rng, init, linear.weight.data.shape)}
    if linear.bias is not None:
        bound = 1.0 / math.sqrt(linear.in_features)
        bias = rng.uniform(-bound, bound, linear.bias.data.shape)
        out[f"{name}.bias"] = np.zeros_like(bias) if init.get("bias") == "zeros" else bias
    return out


def attention_default(rng, name, module, init):
    """{state name: array} of a MultiheadAttention `name` as torch initialises it, whatever the scheme
    (its _reset_parameters): in_proj_weight xavier_uniform over (3E, E), U(±√(6 / 4E)); out_proj's
    weight as its Linear's default, U(±1/√E); both biases zero. A TransformerEncoderLayer: its
    self_attn so, then linear1 and linear2 as any Linear of the list (the scheme applies); its
    norms keep weight 1 and bias 0."""
    if type(module).__name__ == "TransformerEncoderLayer":
        out = attention_default(rng, f"{name}.self_attn", module.self_attn, init)
        for child in ("linear1", "linear2"):
            out.update(linear_state(rng, f"{name}.{child}", getattr(module, child), init))
        return out
    e = module.embed_dim
    in_bound, out_bound = math.sqrt(6.0 / (4 * e)), 1.0 / math.sqrt(e)
    return {f"{name}.in_proj_weight": rng.uniform(-in_bound, in_bound, (3 * e, e)),
            f"{name}.out_proj.weight": rng.uniform(-out_bound, out_bound, (e, e))}
