"""The image sets of [data] images (manual/images.py): deterministic from the seed, balanced, each
label what its pixels show (recomputed here from the pixels alone), shaped as the network takes
them, refused where they cannot fit it, and a lockstep run on them passes."""
import importlib.util
import sys

import numpy as np
import pytest

import manual.data
from manual.images import IMAGE_CLASSES, images
from torch_ref.description import spec
from torch_ref.description.data import check_images
from torch_ref.lockstep.run import lockstep

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed (extra 'digits')")
SETS = ["bars", "shapes", pytest.param("digits", marks=needs_sklearn)]


def desc(images_table, sizes, loss="cross_entropy", **run):
    return spec.parse({"network": {"sizes": list(sizes), "activation": "tanh", "loss": loss},
                       "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
                       "data": {"images": images_table, "batch_size": 8, "shuffle": True},
                       "run": {"steps": 20, **run}})


def lit(image):
    """(rows, cols) of the pixels that are on in a noise-free (H, W) image."""
    return np.nonzero(image > 0)


def bar_orientation(image):
    """0 horizontal, 1 vertical, 2 diagonal, from the pixels: one contiguous run of at least two
    pixels along a row, a column or a diagonal (either direction); None for anything else."""
    rows, cols = lit(image)
    k = len(rows)
    if k < 2:
        return None
    for label, along, fixed in ((0, cols, rows), (1, rows, cols), (2, rows, rows - cols), (2, rows, rows + cols)):
        if len(set(fixed)) == 1 and len(set(along)) == k and along.max() - along.min() == k - 1:
            if label < 2 or len(set(cols)) == k:
                return label
    return None


def shape_kind(image):
    """0 square, 1 cross, 2 circle, from the pixels: the outline of the lit pixels' bounding box is
    a square; lit pixels all on the box's middle row or column a cross; a ring of lit pixels at
    distance r ± ½ from the box's centre, its corners off, a circle; None for anything else."""
    rows, cols = lit(image)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    if r1 - r0 != c1 - c0 or (r1 - r0) % 2:
        return None
    cy, cx, r = (r0 + r1) // 2, (c0 + c1) // 2, (r1 - r0) // 2
    box = np.zeros_like(image, dtype=bool)
    box[r0:r1 + 1, c0:c1 + 1] = True
    box[r0 + 1:r1, c0 + 1:c1] = False
    if np.array_equal(image > 0, box):
        return 0
    if np.all((rows == cy) | (cols == cx)) and len(rows) == 4 * r + 1:
        return 1
    corners = image[[r0, r0, r1, r1], [c0, c1, c0, c1]]
    if not corners.any() and np.all(np.abs(np.hypot(rows - cy, cols - cx) - r) < 0.5):
        return 2
    return None


@pytest.mark.parametrize("name", SETS)
def test_the_seed_decides_the_data(name):
    x, labels = images(name, 40, size=8, seed=3)
    x2, labels2 = images(name, 40, size=8, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(labels, labels2)
    x3, labels3 = images(name, 40, size=8, seed=4)
    assert not np.array_equal(x, x3) and not np.array_equal(labels, labels3)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("n", [1, 7, 30, 200])
def test_classes_are_balanced_and_mixed(name, n):
    _, labels = images(name, n, size=8, seed=1)
    counts = np.bincount(labels, minlength=len(IMAGE_CLASSES[name]))
    assert labels.dtype == np.int64 and len(counts) == len(IMAGE_CLASSES[name])
    assert counts.max() - counts.min() <= 1
    if n >= 30:
        assert not np.all(np.diff(labels) >= 0)  # in random order, not sorted by class


@pytest.mark.parametrize("name,check,size", [("bars", bar_orientation, 4), ("bars", bar_orientation, 9),
                                             ("bars", bar_orientation, 12), ("shapes", shape_kind, 5),
                                             ("shapes", shape_kind, 8), ("shapes", shape_kind, 13)])
def test_each_label_is_what_the_pixels_show(name, check, size):
    x, labels = images(name, 300, size=size, noise=0.0, seed=size)
    assert x.shape == (300, 1, size, size)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert [check(img) for img in x[:, 0]] == labels.tolist()
    if size >= 8:  # the smallest grids hold one position per figure (shapes at 5: the centre only)
        assert len({img.tobytes() for img in x[:, 0]}) > 3 * len(IMAGE_CLASSES[name])  # positions vary


@pytest.mark.parametrize("name", ["bars", "shapes"])
def test_noise_is_added_last_and_has_its_scale(name):
    """The same seed with another noise draws the same figures; the difference is N(0, noise²)."""
    clean, labels = images(name, 400, size=10, noise=0.0, seed=7)
    noisy, labels2 = images(name, 400, size=10, noise=0.3, seed=7)
    np.testing.assert_array_equal(labels, labels2)
    diff = noisy - clean
    assert diff.std() == pytest.approx(0.3, rel=0.03) and abs(diff.mean()) < 0.01


@pytest.mark.parametrize("name", SETS)
def test_channels_are_the_image_in_colours(name):
    """channels > 1: every channel shows the same figure, scaled by an intensity in [½, 1] drawn per
    sample and channel."""
    x, labels = images(name, 50, size=8, channels=3, noise=0.0, seed=2)
    grey, labels1 = images(name, 50, size=8, channels=1, noise=0.0, seed=2)
    assert x.shape == (50, 3, 8, 8)
    np.testing.assert_array_equal(labels, labels1)
    on = grey[:, 0] > 0
    intensity = x.sum(axis=(2, 3)) / grey[:, 0].sum(axis=(1, 2))[:, None]  # (sample, channel)
    np.testing.assert_allclose(x, grey * intensity[:, :, None, None], rtol=1e-12)
    assert np.all((x > 0) == on[:, None]) and intensity.min() >= 0.5 and intensity.max() <= 1.0
    assert np.all(np.ptp(intensity, axis=1) > 0)  # the channels differ: colours, not copies


@needs_sklearn
def test_digits_are_scikit_learns_images_and_labels():
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, labels = images("digits", 1740, noise=0.0, seed=5)
    assert x.shape == (1740, 1, 8, 8) and np.bincount(labels).tolist() == [174] * 10
    flat = digits.images.reshape(len(digits.images), -1) / 16.0
    rows = {row.tobytes(): k for k, row in enumerate(flat)}
    found = [rows.get(img.reshape(-1).tobytes()) for img in x[:, 0]]
    assert None not in found
    assert [int(digits.target[k]) for k in found] == labels.tolist()


def test_digits_without_scikit_learn_are_refused_with_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    with pytest.raises(spec.SpecError) as e:
        desc({"name": "digits", "n": 20}, (64, 10))
    assert e.value.field == "data.images.name"
    assert 'pip install "backprop-check[digits]"' in str(e.value)


@pytest.mark.parametrize("name,channels,loss,y_shape", [("bars", 1, "cross_entropy", (30,)),
                                                       ("shapes", 2, "mse", (30, 3))])
def test_the_mlp_form_takes_the_images_flattened(name, channels, loss, y_shape):
    d = desc({"name": name, "n": 30, "size": 6, "channels": channels, "seed": 1}, (channels * 36, 5, 3), loss)
    x, y = manual.data.dataset(d)
    raw, labels = images(name, 30, 6, channels, 0.1, 1)
    np.testing.assert_array_equal(x, raw.reshape(30, -1))
    assert y.shape == y_shape
    np.testing.assert_array_equal(y if y.ndim == 1 else y.argmax(axis=1), labels)


def layered(input_shape, out_features=3):
    """A parsed layer-list network, by hand (the form `network.input_shape` / `network.layers`)."""
    return {"input_shape": list(input_shape), "loss": "cross_entropy", "loss_args": {"target": "index"},
            "layers": [{"type": "Conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "Flatten"},
                       {"type": "Linear", "out_features": out_features}, {"type": "ReLU"}]}


@pytest.mark.parametrize("input_shape,out,table,field", [
    ((1, 12, 12), 3, {"name": "bars"}, None),
    ((2, 8, 8), 3, {"name": "shapes", "size": 8, "channels": 2}, None),
    ((128,), 3, {"name": "shapes", "size": 8, "channels": 2}, None),  # a flat input: C·H·W features
    ((3, 12, 12), 3, {"name": "bars"}, "data.images.channels"),
    ((1, 10, 10), 3, {"name": "bars"}, "data.images.size"),
    ((1, 12), 3, {"name": "bars"}, "data.images.size"),
    ((1, 12, 12), 4, {"name": "bars"}, "data.images.name"),
])
def test_the_layer_list_form_takes_input_shape(input_shape, out, table, field):
    network = layered(input_shape, out)
    if field is None:
        checked = check_images(table, network)
        x, y = manual.data.dataset({"network": network, "data": {"images": checked}})
        assert x.shape == (checked["n"], *input_shape) and y.shape == (checked["n"],)
        return
    with pytest.raises(spec.SpecError) as e:
        check_images(table, network)
    assert e.value.field == field
    assert "network.input_shape" in str(e.value) or "the last layer's output width = 4" in str(e.value)


@pytest.mark.parametrize("table,sizes,loss", [
    ({"name": "bars", "n": 24, "size": 6}, (36, 8, 3), "cross_entropy"),
    ({"name": "shapes", "n": 24, "size": 7, "channels": 2}, (98, 6, 3), "mse"),
    pytest.param({"name": "digits", "n": 40, "noise": 0.05}, (64, 8, 10), "cross_entropy", marks=needs_sklearn),
])
def test_lockstep_on_flattened_images(table, sizes, loss):
    result = lockstep(desc(table, sizes, loss))
    assert result.ok, str(result.first_mismatch)
