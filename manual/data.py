"""Training data and the order of its mini-batches, decided here and handed to both sides."""
import numpy as np

from .images import IMAGE_CLASSES, images
from .sequences import sequence


def class_index_targets(network):
    """True where the loss takes class indices, (n,) integers: nll, and cross_entropy with
    target = "index" (its default); every other loss takes (n, sizes[-1]) float rows."""
    loss, args = network["loss"], network.get("loss_args", {})
    return loss == "nll" or (loss == "cross_entropy" and args.get("target", "index") == "index")


def targets(network, n, rng):
    """n random targets that fit the network's loss, drawn from the numpy Generator `rng`:

        nll, cross_entropy (target = "index")   class indices ~ U{0, ..., C−1}           (n,) int64
        cross_entropy (target = "probability")  rows ~ Dirichlet(1, ..., 1), sum to 1   (n, C)
        bce, bce_with_logits                    0 or 1 with probability ½ each          (n, C)
        half-sse, mse, l1, smooth_l1, huber     U(0, 1), reachable by any output        (n, C)
    """
    width = network["sizes"][-1]
    if class_index_targets(network):
        return rng.integers(0, width, n, dtype=np.int64)
    if network["loss"] == "cross_entropy":
        return rng.dirichlet(np.ones(width), n)
    if network["loss"] in ("bce", "bce_with_logits"):
        return rng.integers(0, 2, (n, width)).astype(np.float64)
    return rng.uniform(0.0, 1.0, (n, width))


def toy(name, n, noise, seed, n_in=2, n_out=1):
    """A classic toy set drawn by numpy from `seed`: (x (n, 2), labels (n,) in {0, 1}) for the
    classification sets, (x (n, n_in), y (n, n_out)) for the regression. Samples come in a random
    order (a plain batch order then mixes the classes); noise ~ N(0, noise²) is added to x (to y
    for linear).

        xor      x ~ U(−1, 1)², label = [x₀ > 0] xor [x₁ > 0]
        moons    outer half circle (cos θ, sin θ), label 0; inner (1 − cos θ, ½ − sin θ), label 1;
                 θ evenly spaced in [0, π]                        (as sklearn's make_moons)
        circles  radius 1, label 0, and radius ½, label 1, θ evenly spaced in [0, 2π)  (make_circles)
        linear   x ~ N(0, 1), y = x @ W.T + b + noise, W ~ N(0, 1) (n_out, n_in), b ~ N(0, 1) (n_out,)
    """
    rng = np.random.default_rng(seed)
    if name == "linear":
        w, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
        x = rng.standard_normal((n, n_in))
        return x, x @ w.T + b + noise * rng.standard_normal((n, n_out))
    if name == "xor":
        x = rng.uniform(-1.0, 1.0, (n, 2))
        labels = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)
    else:
        n0 = (n + 1) // 2
        t0 = np.linspace(0, np.pi, n0) if name == "moons" else np.linspace(0, 2 * np.pi, n0, endpoint=False)
        t1 = np.linspace(0, np.pi, n - n0) if name == "moons" else np.linspace(0, 2 * np.pi, n - n0, endpoint=False)
        if name == "moons":
            outer = np.stack([np.cos(t0), np.sin(t0)], axis=1)
            inner = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
        else:
            outer = np.stack([np.cos(t0), np.sin(t0)], axis=1)
            inner = 0.5 * np.stack([np.cos(t1), np.sin(t1)], axis=1)
        x = np.concatenate([outer, inner])
        labels = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
        order = rng.permutation(n)
        x, labels = x[order], labels[order]
    return x + noise * rng.standard_normal(x.shape), labels


def toy_targets(labels, network):
    """Class labels (n,) as targets that fit the loss: the indices themselves for class-index losses,
    a 0/1 column for a single output, one-hot rows (n, C) otherwise."""
    width = network["sizes"][-1]
    if class_index_targets(network):
        return labels
    if width == 1:
        return labels[:, None].astype(np.float64)
    return np.eye(width)[labels]


def dataset(desc):
    """(x, y): x float64 (n, sizes[0]); y float64 (n, sizes[-1]), or int64 (n,) class indices for
    nll and index-target cross_entropy; explicit or drawn from a seed.

    Random data: x ~ N(0, 1), then y from `targets` (a target that fits the loss). Images
    (manual/images.py): x (n, *network.input_shape) for the layer-list form, flattened to
    (n, C·H·W) for the MLP form; their class labels as indices for class-index losses, one-hot
    rows otherwise (the description checks that the classes are the network's outputs).
    Sequences (manual/sequences.py): adding's x (n, T, 2) and y (n, 1); copy's and chars' token
    ids x (n, T) int64 and class indices per time step y (n, T) int64.
    """
    data, net = desc["data"], desc["network"]
    if "sequence" in data:  # manual/sequences.py: chars cut into batch_size streams
        return sequence(**data["sequence"], streams=data["batch_size"])
    if "images" in data:
        i = data["images"]
        x, labels = images(i["name"], i["n"], i["size"], i["channels"], i["noise"], i["seed"])
        shape = tuple(net["input_shape"]) if "input_shape" in net else (-1,)
        y = labels if class_index_targets(net) else np.eye(len(IMAGE_CLASSES[i["name"]]))[labels]
        return x.reshape(len(x), *shape), y
    if "toy" in data:
        t = data["toy"]
        x, y = toy(t["name"], t["n"], t["noise"], t["seed"], net["sizes"][0], net["sizes"][-1])
        return x, (y if t["name"] == "linear" else toy_targets(y, net))
    if "random" in data:
        rng = np.random.default_rng(data["random"]["seed"])
        n = data["random"]["n"]
        return rng.standard_normal((n, net["sizes"][0])), targets(net, n, rng)
    y_dtype = np.int64 if class_index_targets(net) else np.float64
    return np.array(data["x"], dtype=np.float64), np.array(data["y"], dtype=y_dtype)


def _as_run(desc, x, y, dtype):
    """(x, y) in the run's dtype (class indices and token ids stay int64), each sample of a layer
    list shaped as its first module takes it."""
    x, y = (x if x.dtype.kind == "i" else x.astype(dtype)), (y if y.dtype.kind == "i" else y.astype(dtype))
    if "input_shape" in desc["network"]:
        x = x.reshape((len(x), *desc["network"]["input_shape"]))
    return x, y


def training_set(desc, dtype=np.float64):
    """(x, y) the run trains on, in the run's dtype: the data set less its last data.holdout samples."""
    x, y = dataset(desc)
    n = len(x) - desc["data"].get("holdout", 0)
    return _as_run(desc, x[:n], y[:n], dtype)


def holdout_batch(desc, dtype=np.float64):
    """The evaluation pass's batch ([run] eval_every), in the run's dtype: the data set's last
    data.holdout samples (never trained on), or without holdout the training set's first
    batch_size samples (in file order, whatever the shuffle)."""
    x, y = dataset(desc)
    m = desc["data"].get("holdout")
    if m:
        return _as_run(desc, x[len(x) - m:], y[len(y) - m:], dtype)
    size = desc["data"]["batch_size"]
    return _as_run(desc, x[:size], y[:size], dtype)


def batches(desc, dtype=np.float64):
    """Yield (x, y) batches forever, epoch after epoch. The manual side decides the order and both
    sides get these same arrays.

    data.shuffle: each epoch visits the samples in a fresh permutation, drawn from one numpy
    generator seeded with data.shuffle_seed (so epoch e's order depends on the seed and e only);
    otherwise in file order. data.drop_last: a last partial batch is skipped; otherwise kept.
    """
    x, y = training_set(desc, dtype)
    data = desc["data"]
    size, n = data["batch_size"], len(x)
    stop = n - n % size if data.get("drop_last") else n
    rng = np.random.default_rng(data.get("shuffle_seed", 0))
    while True:
        if data.get("shuffle"):
            order = rng.permutation(n)
            xe, ye = x[order], y[order]
        else:
            xe, ye = x, y
        for s in range(0, stop, size):
            yield xe[s:s + size], ye[s:s + size]


def dropout_masks(desc, iteration, n):
    """The keep-masks of iteration `iteration` for a batch of `n` samples, {module name: bool array
    (n, *mask_shape)}, keep with probability 1 − p: drawn by numpy from the description's seed
    (init.seed, 0 without one) and the iteration alone, so both sides, and any re-run of that
    iteration, drop the same elements; None for a network without dropout."""
    dropout = desc["network"].get("dropout")
    if not dropout:
        return None
    rng = np.random.default_rng([desc["init"].get("seed", 0), 0x64726F70, iteration])  # "drop"
    return {name: rng.random((n, *d["mask_shape"])) >= d["p"] for name, d in dropout.items()}
