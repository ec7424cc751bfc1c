"""The [data] section of a description: explicit samples, random ones, a toy set, an image set or
a sequence set (sequences.py), and their order (batch_size, shuffle, drop_last); targets that fit the loss, refused where torch
would refuse them."""
import importlib.util

from manual.images import DIGITS_COUNT, DIGITS_SIZE, IMAGE_CLASSES, MIN_SIZE
from ..errors import SpecError, field_key, show
from .fits import class_index_targets
from .names import IMAGE_SETS, TOY_SETS
from .checks import choice, get, integer, is_int, matrix, number, table
from .sequences import check_sequence, token_inputs


def check_data(t, network):
    """Samples (explicit, random, a toy set, an image set or a sequence set) and their order: batch_size, shuffle,
    drop_last; holdout = m keeps the last m samples out of training (the evaluation pass's batch)."""
    order = {"shuffle": t.get("shuffle", False), "shuffle_seed": t.get("shuffle_seed", 0),
             "drop_last": t.get("drop_last", False)}
    for key in ("shuffle", "drop_last"):
        if not isinstance(order[key], bool):
            raise SpecError(f"data.{key}", f"expected true or false, got {show(order[key])}")
    integer(order["shuffle_seed"], "data.shuffle_seed", 0)
    drawn = [k for k in ("toy", "images", "sequence") if k in t]
    if drawn:
        if len(drawn) > 1 or "x" in t or "y" in t or "random" in t:
            raise SpecError("data", "give one of explicit x and y, random, toy, images or sequence")
        kind, batch_size = drawn[0], t.get("batch_size", 1)
        integer(batch_size, "data.batch_size", 1)
        data = {kind: (check_sequence(t[kind], network, batch_size) if kind == "sequence" else
                       (_toy if kind == "toy" else check_images)(t[kind], network)),
                "batch_size": batch_size}
    else:
        data = _samples({k: v for k, v in t.items() if k not in order}, network)
    _sequence_network(network, data)
    n = next((data[k]["n"] for k in ("toy", "images", "sequence", "random") if k in data), None)
    n = len(data["x"]) if n is None else n
    if "holdout" in t:  # the last `holdout` samples: the evaluation pass's batch, never trained on
        data["holdout"] = integer(t["holdout"], "data.holdout", 1)
        if data["holdout"] >= n:
            raise SpecError("data.holdout", f"{data['holdout']} of {n} samples held out: none left to train on")
        n -= data["holdout"]
    if order["drop_last"] and n < data["batch_size"]:
        raise SpecError("data.drop_last", f"{n} samples and batch_size {data['batch_size']}: no full batch to keep")
    return {**data, **order}


def _sequence_network(network, data):
    """A network that takes token ids (an Embedding first) or gives an output per time step
    ((T, C) per sample) needs a token set of data.sequence (copy or chars), which checks the rest."""
    if "layers" not in network or data.get("sequence", {}).get("name") in ("copy", "chars"):
        return
    if token_inputs(network):
        raise SpecError("network.layers[0].type", "an Embedding takes integer token ids: give data.sequence ="
                                                  " {name = \"copy\"} or {name = \"chars\"}")
    if len(network["output_shape"]) != 1:
        raise SpecError("network.layers", f"the last module's output has shape {network['output_shape']} per sample;"
                                          " the loss over every time step needs targets per time step (data.sequence"
                                          " copy or chars); otherwise end with (C,) per sample")


def _toy(t, network):
    """A classic toy set: {name, n, noise, seed}. xor, moons and circles have 2 inputs and 2 classes
    (class indices, one-hot rows, or a 0/1 column for one output); linear is a regression."""
    table(t, "data.toy")
    for key in t:
        if key not in ("name", "n", "noise", "seed"):
            raise SpecError(f"data.toy.{field_key(key)}", "unknown field; expected name, n, noise, seed")
    name = choice(get(t, "data.toy", "name"), TOY_SETS, "data.toy.name")
    n, seed, noise = t.get("n", 200), t.get("seed", 0), t.get("noise", 0.1)
    integer(n, "data.toy.n", 1)
    integer(seed, "data.toy.seed", 0)
    noise = number(noise, "data.toy.noise")
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


IMAGE_DEFAULTS = {"n": 200, "size": 12, "channels": 1, "noise": 0.1, "seed": 0}


def check_images(t, network):
    """An image set: {name, n, size, channels, noise, seed} (manual/images.py), defaults filled in.
    Its samples (channels, size, size) must be the network's input: network.input_shape for the
    layer-list form (or its one flat size), C·H·W = network.sizes[0] for the MLP form (flattened);
    its classes the network's outputs. "digits" is 8×8 and needs scikit-learn."""
    table(t, "data.images")
    for key in t:
        if key not in ("name", *IMAGE_DEFAULTS):
            raise SpecError(f"data.images.{field_key(key)}", f"unknown field; expected name, {', '.join(IMAGE_DEFAULTS)}")
    name = choice(get(t, "data.images", "name"), IMAGE_SETS, "data.images.name")
    defaults = {**IMAGE_DEFAULTS, **({"size": DIGITS_SIZE, "noise": 0.0} if name == "digits" else {})}
    i = {"name": name, **defaults, **{k: v for k, v in t.items() if k != "name"}}
    for key, minimum in (("n", 1), ("seed", 0), ("channels", 1), ("size", MIN_SIZE[name])):
        if key == "size" and is_int(i[key]) and i[key] < minimum:
            raise SpecError("data.images.size", f"{name} needs a grid of at least {minimum}×{minimum}, got {i[key]}")
        integer(i[key], f"data.images.{key}", minimum)
    i["noise"] = number(i["noise"], "data.images.noise")
    if i["noise"] < 0:
        raise SpecError("data.images.noise", f"must be >= 0, got {i['noise']}")
    if name == "digits":
        _check_digits(i)
    image_fits(i, network)
    return i


def _check_digits(i):
    """scikit-learn's digits: installed, 8×8, at most the 1797 images it ships."""
    if not _have_sklearn():
        raise SpecError("data.images.name", 'digits are scikit-learn\'s load_digits, and scikit-learn is not'
                                            ' installed: pip install "backprop-check[digits]" (or scikit-learn)')
    if i["size"] != DIGITS_SIZE:
        raise SpecError("data.images.size", f"digits are {DIGITS_SIZE}×{DIGITS_SIZE}, got {i['size']}")
    if i["n"] > DIGITS_COUNT:
        raise SpecError("data.images.n", f"scikit-learn's digits are {DIGITS_COUNT} images, got {i['n']}")


def _have_sklearn():
    """True where scikit-learn can be imported (looked up, not imported: that takes a second)."""
    try:
        return importlib.util.find_spec("sklearn") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it
        return False


def image_fits(i, network):
    """Refuse an image set whose samples are not the network's input, or whose classes are not
    its outputs. The layer-list form gives network.input_shape: (C, H, W) must equal it (or, for a
    flat input_shape = [features], C·H·W must); the MLP form takes the images flattened."""
    shape = (i["channels"], i["size"], i["size"])
    features = shape[0] * shape[1] * shape[2]
    what = f"{i['name']} images are (channels, size, size) = {shape}"
    if "input_shape" in network:
        want = tuple(network["input_shape"])
        if want != shape and want != (features,):
            field = "data.images.channels" if len(want) == 3 and want[1:] == shape[1:] else "data.images.size"
            raise SpecError(field, f"{what}, but network.input_shape = {list(want)}")
    elif network["sizes"][0] != features:
        raise SpecError("data.images.size", f"{what}, {features} inputs flattened, but network.sizes[0] ="
                                            f" {network['sizes'][0]}")
    classes, outputs = len(IMAGE_CLASSES[i["name"]]), n_outputs(network)
    if outputs is not None and outputs != classes:
        where = "network.sizes[-1]" if "layers" not in network else "the last layer's output width"
        raise SpecError("data.images.name", f"{i['name']} has {classes} classes ({', '.join(IMAGE_CLASSES[i['name']])}),"
                                            f" but {where} = {outputs}")


def n_outputs(network):
    """The network's output width: network.sizes[-1] for the MLP form, the last layer's
    out_features for the layer-list form (None where no layer gives one)."""
    if "sizes" in network:
        return network["sizes"][-1]
    for layer in reversed(network.get("layers", [])):
        if isinstance(layer, dict) and "out_features" in layer:
            return layer["out_features"]
    return None


def _samples(t, network):
    sizes = network["sizes"]
    batch_size = t.get("batch_size", 1)
    integer(batch_size, "data.batch_size", 1)
    if "random" in t:
        if "x" in t or "y" in t:
            raise SpecError("data", "give either explicit x and y or random, not both")
        r = table(t["random"], "data.random")
        for key in r:
            if key not in ("n", "seed"):
                raise SpecError(f"data.random.{field_key(key)}", "unknown field; expected n and seed")
        n, seed = get(r, "data.random", "n"), r.get("seed", 0)
        integer(n, "data.random.n", 1)
        integer(seed, "data.random.seed", 0)
        return {"random": {"n": n, "seed": seed}, "batch_size": batch_size}
    x, y = get(t, "data", "x"), get(t, "data", "y")
    if not isinstance(x, list) or not x:
        raise SpecError("data.x", "expected a non-empty list of samples")
    matrix(x, (len(x), sizes[0]), "data.x")
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
            if not is_int(c):
                raise SpecError(f"{field}[{i}]", f"{loss} takes class indices: expected an integer{hint}, got {show(c)}")
            if not 0 <= c < width and c != network["loss_args"].get("ignore_index"):  # torch: "Target 3 is out of bounds."
                raise SpecError(f"{field}[{i}]", f"class index {c} is out of bounds for {width} outputs"
                                f" (0 <= index < {width})")
        return
    matrix(y, (n, width), field)
    if loss == "bce":  # torch: "all elements of target should be between 0 and 1"
        for i, row in enumerate(y):
            for j, v in enumerate(row):
                if not 0.0 <= v <= 1.0:
                    raise SpecError(f"{field}[{i}][{j}]", f"bce targets must be between 0 and 1, got {show(v)}")
