"""Every activation and every loss (each reduction) in lockstep with the torch twin, float64 and
float32, on small networks (their planted bugs: torch_ref/zoo/planted.py, run by tests/test_mistakes.py); their description syntax, its
defaults (compared with torch's signatures) and its refusals; random targets that fit the loss."""
import json

import numpy as np
import pytest

import manual.data
from torch_ref.cli import main as cli
from torch_ref.description import names, spec
from torch_ref.lockstep.run import lockstep

from conftest import SPECS, make_desc

STEPS = 12  # n = 10 samples in batches of 4: the third batch of every epoch is a partial one


def mode(dtype):
    """float64 runs free (the whole trajectory, tight); float32 re-synced, each step judged on its
    own: free-running float32 drifts apart through ill-conditioned sums (e.g. grad = delta.T @ a
    with log_softmax outputs far below 0) even when both sides are right."""
    return "resync" if dtype == "float32" else "free"

# (activation item as written in the description, for every layer)
ACTIVATION_ITEMS = [
    "sigmoid", "tanh", "relu", "identity", "silu", "softmax", "log_softmax",
    "leaky_relu", {"name": "leaky_relu", "negative_slope": 0.2},
    "elu", {"name": "elu", "alpha": 0.5},
    "gelu", {"name": "gelu", "approximate": "tanh"},
    "softplus", {"name": "softplus", "beta": 2.0, "threshold": 1.5},
]


def item_id(item):
    return item if isinstance(item, str) else "-".join(str(v) for v in item.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ACTIVATION_ITEMS, ids=[item_id(a) for a in ACTIVATION_ITEMS])
def test_activation_in_lockstep(act, dtype):
    """The activation on every layer of a 3-layer net, so its backward feeds a Linear backward."""
    # stacked log_softmax layers (outputs <= 0, far below the targets) diverge to inf from lr 0.05 on,
    # on both sides alike; a smaller step keeps the check about finite values
    lr = 0.02 if act == "log_softmax" else 0.2
    desc = make_desc([3, 6, 5, 3], act, "mse", batch_size=4, n=10, steps=STEPS, dtype=dtype, lr=lr)
    result = lockstep(desc, mode=mode(dtype))
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == STEPS
    assert np.isfinite(result.final_loss["reference"])  # equal NaNs on both sides would prove nothing


# (loss item, hidden activations then the output activation that suits the loss)
LOSS_CASES = [
    ("half-sse", ["tanh", "sigmoid"]),
    ("mse", ["tanh", "identity"]),
    ("l1", ["gelu", "identity"]),
    ({"name": "smooth_l1", "beta": 0.5}, ["tanh", "identity"]),
    ({"name": "smooth_l1", "beta": 0.0}, ["tanh", "identity"]),
    ({"name": "huber", "delta": 0.3}, ["elu", "identity"]),
    ("cross_entropy", ["tanh", "identity"]),
    ({"name": "cross_entropy", "label_smoothing": 0.2}, ["relu", "identity"]),
    ({"name": "cross_entropy", "target": "probability"}, ["tanh", "identity"]),
    ({"name": "cross_entropy", "target": "probability", "label_smoothing": 0.1}, ["silu", "identity"]),
    ("nll", ["tanh", "log_softmax"]),
    ({"name": "cross_entropy", "ignore_index": 1, "label_smoothing": 0.1}, ["tanh", "identity"]),  # class 1 ignored
    ({"name": "nll", "ignore_index": 0}, ["tanh", "log_softmax"]),
    ("bce", ["tanh", "sigmoid"]),
    ("bce", ["tanh", "softmax"]),
    ("bce_with_logits", ["leaky_relu", "identity"]),
]
# half-sse has no reduction (always ½·sum); every other loss with "mean" and with "sum"
LOSS_TABLE = [("half-sse", acts, None) for loss, acts in LOSS_CASES if loss == "half-sse"]
LOSS_TABLE += [({**({"name": loss} if isinstance(loss, str) else loss), "reduction": r}, acts, r)
               for loss, acts in LOSS_CASES if loss != "half-sse" for r in ("mean", "sum")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss,acts,reduction", LOSS_TABLE,
                         ids=[f"{item_id(l)}-{a[-1]}" for l, a, _ in LOSS_TABLE])
def test_loss_in_lockstep(loss, acts, reduction, dtype):
    lr = 0.5 if reduction == "mean" else 0.1  # a summed loss grows with the batch
    desc = make_desc([3, 6, 4], acts, loss, batch_size=4, n=10, steps=STEPS, dtype=dtype, lr=lr)
    result = lockstep(desc, mode=mode(dtype))
    assert result.ok, str(result.first_mismatch)
    assert result.steps_checked == STEPS
    assert np.isfinite(result.final_loss["reference"])


def test_tables_cover_every_activation_and_every_loss_with_each_reduction():
    acts = {a if isinstance(a, str) else a["name"] for a in ACTIVATION_ITEMS}
    assert acts == set(names.ACTIVATIONS)
    covered = {(l if isinstance(l, str) else l["name"], r) for l, _, r in LOSS_TABLE}
    expected = {(name, r) for name, args in spec.LOSS_ARGS.items()
                for r in (("mean", "sum") if "reduction" in args and name != "half-sse" else (None,))}
    assert covered == expected


def test_classification_trains():
    """A lockstep of frozen copies would pass too: cross-entropy must fall (here the net memorises
    10 randomly labelled samples)."""
    desc = make_desc([3, 8, 3], ["tanh", "identity"], "cross_entropy", batch_size=10, n=10, steps=1, lr=0.5)
    first = lockstep(desc).final_loss["manual"]
    last = lockstep({**desc, "run": {**desc["run"], "steps": 80}})
    assert last.ok, str(last.first_mismatch)
    assert last.final_loss["manual"] < 0.75 * first


def test_explicit_class_indices_from_a_file_pass_in_both_dtypes(capsys):
    for dtype in ("float64", "float32"):
        code = cli.main(["run", str(SPECS / "classifier.toml"), "--dtype", dtype, "--steps", "60", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0, out["first_mismatch"]
        assert out["ok"] and out["steps_checked"] == 60


# the planted bugs of these activations and losses are registry entries (torch_ref/zoo/planted.py),
# run by tests/test_mistakes.py


# --- the description: items with arguments, defaults, refusals ---

def test_items_are_normalised_to_names_and_full_arguments():
    desc = make_desc([2, 3, 3, 2], [{"name": "leaky_relu"}, "gelu", {"name": "softplus", "beta": 2}],
                     {"name": "cross_entropy", "reduction": "sum"})
    net = desc["network"]
    assert net["activation"] == ["leaky_relu", "gelu", "softplus"]
    assert net["activation_args"] == [{"negative_slope": 0.01}, {"approximate": "none"},
                                      {"beta": 2.0, "threshold": 20.0}]
    assert net["loss"] == "cross_entropy"
    assert net["loss_args"] == {"ignore_index": -100, "reduction": "sum", "label_smoothing": 0.0, "target": "index"}
    one = make_desc([2, 3, 2], {"name": "elu", "alpha": 0.5}, "mse")["network"]
    assert one["activation"] == ["elu", "elu"] and one["activation_args"] == [{"alpha": 0.5}] * 2
    assert one["loss_args"] == {"reduction": "mean"}


def spoiled(raw, **network):
    raw["network"].update(network)
    return raw


# (changes to the worked example's [network] and [data], the field named in the one-line error)
BAD = [
    ({"activation": {"name": "leaky_relu", "negative_slope": "steep"}}, "network.activation.negative_slope"),
    ({"activation": ["sigmoid", {"name": "leaky_relu", "slope": 0.2}]}, "network.activation[1].slope"),
    ({"activation": ["sigmoid", {"name": "gelu", "approximate": "erf"}]}, "network.activation[1].approximate"),
    ({"activation": ["sigmoid", {"name": "elu", "alpha": float("nan")}]}, "network.activation[1].alpha"),
    ({"activation": ["sigmoid", {"name": "elu", "alpha": True}]}, "network.activation[1].alpha"),
    ({"activation": {"name": "softplus", "beta": 0}}, "network.activation.beta"),
    ({"activation": {"name": "softplus", "threshold": float("inf")}}, "network.activation.threshold"),
    ({"activation": {"negative_slope": 0.2}}, "network.activation.name"),
    ({"activation": ["sigmoid", "swish"]}, "network.activation[1]"),
    ({"activation": ["sigmoid", {"name": "tanh", "alpha": 1.0}]}, "network.activation[1].alpha"),
    ({"loss": {"name": "mse", "reduction": "none"}}, "network.loss.reduction"),
    ({"loss": {"name": "mse", "reduction": "avg"}}, "network.loss.reduction"),
    ({"loss": {"name": "half-sse", "reduction": "mean"}}, "network.loss.reduction"),  # a sum: "sum" or "batch-mean"
    ({"loss": {"name": "huber", "delta": 0}}, "network.loss.delta"),
    ({"loss": {"name": "smooth_l1", "beta": -1}}, "network.loss.beta"),
    ({"loss": {"name": "cross_entropy", "label_smoothing": 1.5}}, "network.loss.label_smoothing"),
    ({"loss": {"name": "cross_entropy", "target": "soft"}}, "network.loss.target"),
    ({"loss": {"name": "cross_entropy", "ignore_index": 1.5}}, "network.loss.ignore_index"),
    ({"loss": {"name": "nll", "ignore_index": "none"}}, "network.loss.ignore_index"),
    ({"loss": {"name": "crossentropy"}}, "network.loss.name"),
    ({"loss": {"reduction": "sum"}}, "network.loss.name"),
    ({"loss": "bce", "activation": ["sigmoid", "relu"]}, "network.loss"),   # outputs outside [0, 1]
    ({"loss": "bce", "activation": "tanh"}, "network.loss"),
    ({"loss": "bce", "y": [[0.01, 1.5]]}, "data.y[0][1]"),                  # torch: targets in [0, 1]
    ({"loss": "cross_entropy"}, "data.y[0]"),                               # rows where indices are due
    ({"loss": "cross_entropy", "y": [2]}, "data.y[0]"),                     # out of bounds, 2 outputs
    ({"loss": "nll", "y": [-1]}, "data.y[0]"),
    ({"loss": "nll", "y": [1.0]}, "data.y[0]"),
    ({"loss": "nll", "y": [True]}, "data.y[0]"),
    ({"loss": "nll", "y": [0, 1]}, "data.y"),                               # one per sample
    ({"loss": {"name": "cross_entropy", "target": "probability"}, "y": [0]}, "data.y"),
    ({"loss": {"name": "cross_entropy", "target": "probability"}, "y": [[0.5]]}, "data.y[0]"),
]


@pytest.mark.parametrize("change,field", BAD, ids=[f"{field}={json.dumps(c)[:40]}" for c, field in BAD])
def test_bad_activation_or_loss_is_one_line_naming_the_field(tmp_path, raw, capsys, change, field):
    change = dict(change)
    if "y" in change:
        raw["data"]["y"] = change.pop("y")
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(spoiled(raw, **change)))
    assert cli.main(["run", str(f)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"backprop-check: error: {field}:"), err


def test_valid_items_on_the_worked_example_run(tmp_path, raw, capsys):
    """The same file with good items passes: the refusals above are about the spoiled values."""
    for change in ({"loss": "bce"}, {"loss": "cross_entropy", "y": [1]},
                   {"loss": {"name": "cross_entropy", "target": "probability", "label_smoothing": 0.1}},
                   {"activation": ["sigmoid", {"name": "leaky_relu", "negative_slope": 0.2}], "loss": "huber"}):
        r = json.loads(json.dumps(raw))
        change = dict(change)
        if "y" in change:
            r["data"]["y"] = change.pop("y")
        f = tmp_path / "good.json"
        f.write_text(json.dumps(spoiled(r, **change)))
        assert cli.main(["run", str(f), "--steps", "5"]) == 0, capsys.readouterr()
        capsys.readouterr()


# --- random targets that fit the loss ---

@pytest.mark.parametrize("loss,kind", [
    ("cross_entropy", "index"), ("nll", "index"), ({"name": "cross_entropy", "target": "probability"}, "simplex"),
    ("bce", "binary"), ("bce_with_logits", "binary"), ("mse", "unit"), ("huber", "unit"), ("half-sse", "unit"),
])
def test_random_targets_fit_the_loss(loss, kind):
    acts = ["tanh", "sigmoid"] if loss == "bce" else ["tanh", "identity"]
    desc = make_desc([2, 3, 4], acts, loss, n=400)
    x, y = manual.data.dataset(desc)
    assert x.shape == (400, 2)
    if kind == "index":
        assert y.dtype == np.int64 and y.shape == (400,)
        assert set(y.tolist()) == {0, 1, 2, 3}  # every class drawn, none outside
        batch_x, batch_y = next(manual.data.batches(desc, np.float32))
        assert batch_y.dtype == np.int64 and batch_x.dtype == np.float32
        return
    assert y.dtype == np.float64 and y.shape == (400, 4)
    if kind == "simplex":
        assert (y >= 0).all() and np.allclose(y.sum(axis=1), 1.0)
    elif kind == "binary":
        assert set(np.unique(y).tolist()) == {0.0, 1.0}
    else:
        assert (y >= 0).all() and (y <= 1).all() and len(np.unique(y)) == y.size
