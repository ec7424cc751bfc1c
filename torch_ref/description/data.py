"""The [data] section of a description: explicit samples, random ones or a toy set, and their
order (batch_size, shuffle, drop_last); targets that fit the loss, refused where torch would
refuse them."""
from ..errors import SpecError, field_key, show
from .fits import class_index_targets
from .names import TOY_SETS
from .checks import choice, get, integer, is_int, matrix, number, table


def check_data(t, network):
    """Samples (explicit, random or a toy set) and their order: batch_size, shuffle, drop_last."""
    order = {"shuffle": t.get("shuffle", False), "shuffle_seed": t.get("shuffle_seed", 0),
             "drop_last": t.get("drop_last", False)}
    for key in ("shuffle", "drop_last"):
        if not isinstance(order[key], bool):
            raise SpecError(f"data.{key}", f"expected true or false, got {show(order[key])}")
    integer(order["shuffle_seed"], "data.shuffle_seed", 0)
    if "toy" in t:
        if "x" in t or "y" in t or "random" in t:
            raise SpecError("data", "give one of explicit x and y, random, or toy")
        data = {"toy": _toy(t["toy"], network), "batch_size": t.get("batch_size", 1)}
        integer(data["batch_size"], "data.batch_size", 1)
    else:
        data = _samples({k: v for k, v in t.items() if k not in order}, network)
    n = data["toy"]["n"] if "toy" in data else data["random"]["n"] if "random" in data else len(data["x"])
    if order["drop_last"] and n < data["batch_size"]:
        raise SpecError("data.drop_last", f"{n} samples and batch_size {data['batch_size']}: no full batch to keep")
    return {**data, **order}


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
            if not 0 <= c < width:  # torch: "Target 3 is out of bounds."
                raise SpecError(f"{field}[{i}]", f"class index {c} is out of bounds for {width} outputs"
                                f" (0 <= index < {width})")
        return
    matrix(y, (n, width), field)
    if loss == "bce":  # torch: "all elements of target should be between 0 and 1"
        for i, row in enumerate(y):
            for j, v in enumerate(row):
                if not 0.0 <= v <= 1.0:
                    raise SpecError(f"{field}[{i}][{j}]", f"bce targets must be between 0 and 1, got {show(v)}")
