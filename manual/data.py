"""Training data and the order of its mini-batches, decided here and handed to both sides."""
import numpy as np


def dataset(desc):
    """(x, y) as float64 arrays, (n, sizes[0]) and (n, sizes[-1]), explicit or drawn from a seed.

    Random data: x ~ N(0, 1), y ~ U(0, 1) (a target any of the losses can reach).
    """
    data, sizes = desc["data"], desc["network"]["sizes"]
    if "random" in data:
        rng = np.random.default_rng(data["random"]["seed"])
        n = data["random"]["n"]
        return rng.standard_normal((n, sizes[0])), rng.uniform(0.0, 1.0, (n, sizes[-1]))
    return np.array(data["x"], dtype=np.float64), np.array(data["y"], dtype=np.float64)


def batches(desc, dtype=np.float64):
    """Yield (x, y) batches forever, in order, epoch after epoch; a last partial batch is kept."""
    x, y = dataset(desc)
    x, y = x.astype(dtype), y.astype(dtype)
    size = desc["data"]["batch_size"]
    starts = range(0, len(x), size)
    while True:
        for s in starts:
            yield x[s:s + size], y[s:s + size]
