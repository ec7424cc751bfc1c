"""Training data and the order of its mini-batches, decided here and handed to both sides."""
import numpy as np


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


def dataset(desc):
    """(x, y): x float64 (n, sizes[0]); y float64 (n, sizes[-1]), or int64 (n,) class indices for
    nll and index-target cross_entropy; explicit or drawn from a seed.

    Random data: x ~ N(0, 1), then y from `targets` (a target that fits the loss).
    """
    data, net = desc["data"], desc["network"]
    if "random" in data:
        rng = np.random.default_rng(data["random"]["seed"])
        n = data["random"]["n"]
        return rng.standard_normal((n, net["sizes"][0])), targets(net, n, rng)
    y_dtype = np.int64 if class_index_targets(net) else np.float64
    return np.array(data["x"], dtype=np.float64), np.array(data["y"], dtype=y_dtype)


def batches(desc, dtype=np.float64):
    """Yield (x, y) batches forever, in order, epoch after epoch; a last partial batch is kept."""
    x, y = dataset(desc)
    x, y = x.astype(dtype), (y if y.dtype.kind == "i" else y.astype(dtype))  # class indices stay int64
    size = desc["data"]["batch_size"]
    starts = range(0, len(x), size)
    while True:
        for s in starts:
            yield x[s:s + size], y[s:s + size]
