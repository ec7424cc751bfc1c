"""Batch order (seeded shuffling each epoch, last partial batch kept or dropped) and the toy sets."""
import numpy as np
import pytest

import manual.data
from torch_ref.description import names, spec
from torch_ref.lockstep.run import lockstep


def desc(data, sizes=(2, 8, 1), loss="mse", **run):
    return spec.parse({"network": {"sizes": list(sizes), "activation": "tanh", "loss": loss},
                       "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
                       "data": data, "run": {"steps": 30, **run}})


def epochs(d, count):
    """`count` epochs of batches, as lists of arrays of x rows."""
    n_batches = -(-10 // d["data"]["batch_size"]) if not d["data"]["drop_last"] else 10 // d["data"]["batch_size"]
    gen = manual.data.batches(d)
    return [[next(gen)[0] for _ in range(n_batches)] for _ in range(count)]


def row_ids(x, batch):
    """Which sample each row of `batch` is (rows of x are distinct)."""
    return [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in batch]


@pytest.mark.parametrize("batch_size,drop_last", [(3, False), (3, True), (5, True), (1, False), (10, True)])
def test_shuffled_epochs_are_permutations_in_fresh_orders(batch_size, drop_last):
    d = desc({"random": {"n": 10, "seed": 1}, "batch_size": batch_size, "shuffle": True, "shuffle_seed": 4,
              "drop_last": drop_last})
    x, _ = manual.data.dataset(d)
    orders = []
    for ep in epochs(d, 4):
        sizes = [len(b) for b in ep]
        full, rest = divmod(10, batch_size)
        assert sizes == [batch_size] * full + ([] if drop_last or not rest else [rest])
        ids = [i for b in ep for i in row_ids(x, b)]
        assert len(set(ids)) == len(ids)  # no sample twice in an epoch
        if not drop_last:
            assert sorted(ids) == list(range(10))  # every sample once
        orders.append(ids)
    if batch_size < 10:
        assert len({tuple(o) for o in orders}) == 4  # a fresh order each epoch
    again = [[i for b in ep for i in row_ids(x, b)] for ep in epochs(d, 4)]
    assert again == orders  # seeded: the same run gives the same order
    other = desc({**{k: d["data"][k] for k in ("random", "batch_size", "shuffle", "drop_last")}, "shuffle_seed": 5})
    assert [[i for b in ep for i in row_ids(x, b)] for ep in epochs(other, 4)] != orders


def test_unshuffled_is_file_order_and_partial_batch_kept_or_dropped():
    d = desc({"random": {"n": 10, "seed": 1}, "batch_size": 4})
    x, _ = manual.data.dataset(d)
    ep = epochs(d, 2)
    assert [row_ids(x, b) for b in ep[0]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] == [row_ids(x, b) for b in ep[1]]
    dropped = epochs(desc({"random": {"n": 10, "seed": 1}, "batch_size": 4, "drop_last": True}), 2)
    assert [row_ids(x, b) for ep in dropped for b in ep] == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,sizes,loss", [("xor", (2, 8, 1), "mse"), ("moons", (2, 8, 2), "cross_entropy"),
                                              ("circles", (2, 6, 1), "bce_with_logits"), ("linear", (3, 5, 2), "mse")])
def test_lockstep_on_toy_sets_shuffled(name, sizes, loss, dtype):
    if loss not in names.LOSSES:
        pytest.skip(f"{loss} is not in this build")
    d = desc({"toy": {"name": name, "n": 23, "noise": 0.1, "seed": 2}, "batch_size": 5, "shuffle": True,
              "drop_last": name == "xor"}, sizes, loss, dtype=dtype)
    result = lockstep(d, mode="resync" if dtype == "float32" else "free")
    assert result.ok, str(result.first_mismatch)


def test_toy_sets_have_their_shapes():
    """Noise-free samples lie exactly where the formulas put them; the classes are balanced."""
    x, lab = manual.data.toy("xor", 400, 0.0, 0)
    assert x.shape == (400, 2) and np.abs(x).max() <= 1
    np.testing.assert_array_equal(lab, (np.sign(x[:, 0]) * np.sign(x[:, 1]) < 0).astype(int))
    assert 150 < lab.sum() < 250
    x, lab = manual.data.toy("moons", 101, 0.0, 0)
    outer, inner = x[lab == 0], x[lab == 1]
    assert len(outer) == 51 and len(inner) == 50
    np.testing.assert_allclose(np.hypot(*outer.T), 1.0, rtol=1e-12)
    assert outer[:, 1].min() >= -1e-12
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1.0, rtol=1e-12)
    assert inner[:, 1].max() <= 0.5 + 1e-12
    assert lab[:20].sum() not in (0, 20)  # the classes come mixed, not sorted
    x, lab = manual.data.toy("circles", 100, 0.0, 0)
    np.testing.assert_allclose(np.hypot(*x.T), np.where(lab == 0, 1.0, 0.5), rtol=1e-12)
    x, lab = manual.data.toy("moons", 4000, 0.2, 1)
    clean_r = np.hypot(*x[lab == 0].T)
    assert clean_r.mean() == pytest.approx(1.0, abs=0.05) and np.std(clean_r) == pytest.approx(0.2, rel=0.15)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_linear_regression_set(noise):
    x, y = manual.data.toy("linear", 3000, noise, 5, n_in=3, n_out=2)
    a = np.hstack([x, np.ones((3000, 1))])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    residual = y - a @ coef
    assert residual.std() == pytest.approx(noise, abs=0.01 if noise else 1e-12)
    assert np.abs(coef).max() > 0.1  # a real linear relation, not noise alone


def test_toy_targets_fit_the_loss():
    lab = np.array([0, 1, 1, 0])
    net1 = spec.parse({"network": {"sizes": [2, 1], "activation": "identity", "loss": "mse"}, "init": {"seed": 0},
                       "optimizer": {"name": "sgd"}, "data": {"toy": {"name": "xor"}}})["network"]
    np.testing.assert_array_equal(manual.data.toy_targets(lab, net1), [[0.0], [1.0], [1.0], [0.0]])
    net2 = {**net1, "sizes": [2, 2]}
    np.testing.assert_array_equal(manual.data.toy_targets(lab, net2), [[1, 0], [0, 1], [0, 1], [1, 0]])


@pytest.mark.parametrize("data,sizes,field", [
    ({"toy": {"name": "xor"}}, (3, 1), "data.toy.name"),
    ({"toy": {"name": "spiral"}}, (2, 1), "data.toy.name"),
    ({"toy": {"name": "moons", "noise": -0.1}}, (2, 1), "data.toy.noise"),
    ({"toy": {"name": "moons", "n": 0}}, (2, 1), "data.toy.n"),
    ({"toy": {"name": "moons", "colour": 1}}, (2, 1), "data.toy.colour"),
    ({"toy": {"name": "moons"}, "random": {"n": 3}}, (2, 1), "data"),
    ({"random": {"n": 3}, "batch_size": 4, "drop_last": True}, (2, 1), "data.drop_last"),
    ({"random": {"n": 3}, "shuffle": "yes"}, (2, 1), "data.shuffle"),
    ({"random": {"n": 3}, "shuffle": True, "shuffle_seed": -1}, (2, 1), "data.shuffle_seed"),
])
def test_bad_data_names_the_field(data, sizes, field):
    with pytest.raises(spec.SpecError) as e:
        desc(data, sizes)
    assert e.value.field == field
