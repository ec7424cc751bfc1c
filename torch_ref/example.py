"""The seed's worked example, recomputed: every figure by the manual side, confirmed by autograd,
beside the figure the seed prints. A printed figure that the correct algorithm does not reproduce
(to the digits printed) is listed under `errata`, with both values and the difference.

Names: w1..w8 are parameter entries (weight is (out_features, in_features), no transposes):
    w1, w2 = layers.0.weight[0, :]    w3, w4 = layers.0.weight[1, :]
    w5, w6 = layers.1.weight[0, :]    w7, w8 = layers.1.weight[1, :]
"""
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import torch

import manual.data
import manual.init
import manual.trainer

from .description import spec
from .description.files import bundled_path
from .twin.model import Twin
from .testing import compare, tolerance

W_INDEX = {f"w{4 * k + 2 * i + j + 1}": (f"layers.{k}.weight", (i, j))
           for k in range(2) for i in range(2) for j in range(2)}
LONG_RUN = 10000

# The seed's printed figures, as printed (the strings keep the number of digits it shows).
SEED = {
    "forward": {"net_h1": "0.3775", "out_h1": "0.593269992", "out_h2": "0.596884378",
                "net_o1": "1.105905967", "out_o1": "0.75136507", "out_o2": "0.772928465"},
    "E_o1": "0.274811083",
    "E_o2": "0.023560026",
    "E_total": "0.298371109",
    "chain_w5": {"dE_dout_o1": "0.74136507", "dout_o1_dnet_o1": "0.186815602",
                 "dnet_o1_dw5": "0.593269992"},
    "chain_w1": {"dEo1_dnet_o1": "0.138498562", "dnet_o1_dout_h1": "0.40",
                 "dEo1_dout_h1": "0.055399425", "dEo2_dout_h1": "-0.019049119",
                 "dE_dout_h1": "0.036350306", "dout_h1_dnet_h1": "0.241300709",
                 "dnet_h1_dw1": "0.05"},
    "grads": {"w1": "0.000438568", "w2": None, "w3": None, "w4": None,
              "w5": "0.082167041", "w6": None, "w7": None, "w8": None},
    "updated": {"w1": "0.149780716", "w2": "0.19956143", "w3": "0.24975114", "w4": "0.29950229",
                "w5": "0.35891648", "w6": "0.408666186", "w7": "0.511301270", "w8": "0.561370121"},
    "E_after_1": "0.291027924",
    "E_after_10000": "0.000035085",
    "outputs_after_10000": ["0.015912196", "0.984065734"],
}

# Places where the seed disagrees with itself: (figure, the seed's value, what it should equal, note).
SELF_DISAGREEMENTS = [
    ("forward.out_o1 (summary sentence)", "0.75136079", ("forward", "out_o1"),
     "the sentence closing the forward pass prints [0.75136079, 0.772928465]; the step above it "
     "computes out_o1 = 0.75136507"),
    ("code: target of o2", "0.09", ("target_o2",),
     "the code trains on nn.train([0.05, 0.1], [0.01, 0.09]), the text's target is 0.99"),
]


def spec_path():
    return bundled_path("worked_example")


def load_spec():
    return spec.load(spec_path())


def manual_figures(desc, build=None, final_state=None):
    """Every figure of the walk-through, by the manual engine (numpy), with its formulas; or by the
    implementation `build(desc)` (a zoo entry: the same engine with one mistake). The figures after
    10000 iterations are those of `final_state` (the lockstep run's, when given), else of a plain
    training loop of the implementation."""
    trainer = (build or manual.trainer.build)(desc)
    trainer.load_state_dict(manual.init.initial_state(desc))
    x, y = manual.data.dataset(desc)
    (L0, L1), (A0, A1) = trainer.model.layers, trainer.model.activations
    W2 = L1.weight.data.copy()
    net_h = L0.forward(x)
    out_h = A0.forward(net_h)
    net_o = L1.forward(out_h)
    out_o = A1.forward(net_o)
    E_o = 0.5 * (y - out_o) ** 2  # per output, (1, 2)

    step = trainer.train_step(x, y)  # the first update
    delta_o = step["deltas"]["layers.1"]  # dE/dnet_o, (1, 2)
    dE_dout_h = delta_o @ W2  # (1, 2): Σ_o delta_o · w_ho
    f = {
        "forward": {"net_h1": net_h[0, 0], "out_h1": out_h[0, 0], "out_h2": out_h[0, 1],
                    "net_o1": net_o[0, 0], "out_o1": out_o[0, 0], "out_o2": out_o[0, 1]},
        "E_o1": E_o[0, 0], "E_o2": E_o[0, 1], "E_total": step["loss"],
        "chain_w5": {"dE_dout_o1": out_o[0, 0] - y[0, 0],
                     "dout_o1_dnet_o1": out_o[0, 0] * (1 - out_o[0, 0]),
                     "dnet_o1_dw5": out_h[0, 0]},
        "chain_w1": {"dEo1_dnet_o1": delta_o[0, 0], "dnet_o1_dout_h1": W2[0, 0],
                     "dEo1_dout_h1": delta_o[0, 0] * W2[0, 0],
                     "dEo2_dout_h1": delta_o[0, 1] * W2[1, 0],
                     "dE_dout_h1": dE_dout_h[0, 0],
                     "dout_h1_dnet_h1": out_h[0, 0] * (1 - out_h[0, 0]),
                     "dnet_h1_dw1": x[0, 0]},
        "grads": {w: step["grads"][n][ij] for w, (n, ij) in W_INDEX.items()},
        "updated": {w: step["state_dict"][n][ij] for w, (n, ij) in W_INDEX.items()},
    }
    f["E_after_1"] = 0.5 * np.sum((y - trainer.model.forward(x)) ** 2)
    if final_state is None:
        for _ in range(LONG_RUN - 1):
            trainer.step(x, y)  # the same iteration as train_step, nothing copied out
    else:
        trainer.load_state_dict(final_state)
    out = trainer.model.forward(x)
    f["E_after_10000"] = 0.5 * np.sum((y - out) ** 2)
    f["outputs_after_10000"] = list(out[0])
    f["target_o2"] = y[0, 1]
    return _floats(f)


def autograd_figures(desc, final_state=None):
    """The same figures from torch autograd: each derivative is torch.autograd.grad of the named
    quantity with respect to the named one, on the twin's model; the figures after 10000 iterations
    are the twin's at `final_state`, its parameters after the lockstep run's last iteration (NaN,
    not confirmed, without one)."""
    x, y = manual.data.dataset(desc)
    twin = Twin(desc, manual.init.initial_state(desc))
    X, Y = twin.tensor(x), twin.tensor(y)
    L0, L1 = twin.model.layers
    net_h = L0(X)
    out_h = torch.sigmoid(net_h)
    net_o = L1(out_h)
    out_o = torch.sigmoid(net_o)
    E_o = 0.5 * (Y - out_o) ** 2
    E = E_o.sum()

    def d(of, wrt):
        return torch.autograd.grad(of, wrt, retain_graph=True)[0][0, 0].item()

    f = {
        "forward": {"net_h1": net_h[0, 0], "out_h1": out_h[0, 0], "out_h2": out_h[0, 1],
                    "net_o1": net_o[0, 0], "out_o1": out_o[0, 0], "out_o2": out_o[0, 1]},
        "E_o1": E_o[0, 0], "E_o2": E_o[0, 1], "E_total": E,
        "chain_w5": {"dE_dout_o1": d(E, out_o), "dout_o1_dnet_o1": d(out_o[0, 0], net_o),
                     "dnet_o1_dw5": d(net_o[0, 0], L1.weight)},
        "chain_w1": {"dEo1_dnet_o1": d(E_o[0, 0], net_o), "dnet_o1_dout_h1": d(net_o[0, 0], out_h),
                     "dEo1_dout_h1": d(E_o[0, 0], out_h), "dEo2_dout_h1": d(E_o[0, 1], out_h),
                     "dE_dout_h1": d(E, out_h), "dout_h1_dnet_h1": d(out_h[0, 0], net_h),
                     "dnet_h1_dw1": d(net_h[0, 0], L0.weight)},
    }
    step = twin.train_step(x, y)
    f["grads"] = {w: step["grads"][n][ij] for w, (n, ij) in W_INDEX.items()}
    f["updated"] = {w: step["state_dict"][n][ij] for w, (n, ij) in W_INDEX.items()}
    f["E_after_1"] = twin.loss_fn(twin.model(X), Y)
    with torch.no_grad():
        trained = Twin(desc, final_state) if final_state is not None else None
        out = trained.model(X) if trained else torch.full_like(Y, float("nan"))
        f["E_after_10000"] = trained.loss_fn(out, Y) if trained else float("nan")
    f["outputs_after_10000"] = list(out[0])
    f["target_o2"] = y[0, 1]
    return _floats(f)


def _floats(tree):
    if isinstance(tree, dict):
        return {k: _floats(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_floats(v) for v in tree]
    return float(tree.item() if hasattr(tree, "item") else tree)


def _leaves(tree, prefix=""):
    """(dotted path, value) for every leaf; list items get their index."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, (dict, list)):
            yield from _leaves(v, path)
        else:
            yield path, v


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def reproduces(printed, value):
    """True when `value`, rounded to the decimals the seed prints, is the printed figure."""
    if not np.isfinite(value):
        return False
    p = Decimal(printed)
    return Decimal(repr(float(value))).quantize(p, rounding=ROUND_HALF_EVEN) == p


def report(desc=None, explain=True):
    """The whole walk-through as one dict: computed values, the seed's, confirmation, errata (each
    tried against the zoo's mistakes when `explain`), and under "lockstep" the Result of the run
    that trained both sides for the 10000 iterations, every iteration compared, with finite
    differences on the first (`backprop-check run worked_example --fd`). The figures after 10000
    iterations are each side's at the end of that run; where the run failed, or the second opinion
    re-anchored the twin on the implementation's state (its figures would not be autograd's
    alone), they are not confirmed."""
    from .lockstep.finite_differences import FD_STEPS
    from .lockstep.run import lockstep
    desc = desc or load_spec()
    assert desc["run"]["steps"] == LONG_RUN, "the walk-through's figures are named after its 10000 iterations"
    run = lockstep(desc, fd_steps=FD_STEPS)
    independent = run.ok and not run.rounding.get("reanchored")
    computed = manual_figures(desc, final_state=(run.final_state or {}).get("manual"))
    reference = autograd_figures(desc, run.final_state["reference"] if independent else None)
    rtol, atol = tolerance(desc["run"]["dtype"])
    ref = dict(_leaves(reference))
    seed = dict(_leaves(SEED))
    rows, errata, paths = [], [], []
    for path, value in _leaves(computed):
        c = compare(value, ref[path], rtol, atol)
        printed = seed.get(path)
        agrees = None if printed is None else reproduces(printed, value)
        rows.append({"figure": path, "manual": value, "autograd": ref[path], "confirmed": c.ok,
                     "rel_err": c.rel_err, "seed": printed, "agrees": agrees})
        if agrees is False:
            errata.append({"figure": path, "seed": float(printed), "correct": value,
                           "difference": value - float(printed), "kind": "printed figure"})
            paths.append((path, printed))
    for figure, printed, path, note in SELF_DISAGREEMENTS:
        value = _get(computed, path)
        if not reproduces(printed, value):
            errata.append({"figure": figure, "seed": float(printed), "correct": value,
                           "difference": value - float(printed), "kind": "seed disagrees with itself",
                           "note": note})
            paths.append((".".join(path), printed))
    tried = explain_errata(errata, paths, desc) if explain else None
    computed.pop("target_o2")
    seed_json = _floats_or_none(SEED)
    return {
        **computed,
        "seed": seed_json,
        "confirmed_by_autograd": all(r["confirmed"] for r in rows),
        "tolerance": {"rtol": rtol, "atol": atol},
        "rows": rows,
        "errata": errata,
        "errata_tried": tried,
        "lockstep": run,
    }


def explain_errata(errata, paths, desc):
    """For each erratum, the first zoo mistake (in the zoo's order) whose figure, computed exactly
    as the correct one is, reproduces the seed's printed figure to the digits printed. Sets
    `explained_by` (the zoo id, or None), `explained_value` and `also_explained_by` on every
    erratum; returns the ids of the mistakes tried (those that apply to the worked example)."""
    from .zoo.mistakes import applicable
    tried = applicable(desc)
    with np.errstate(all="ignore"):  # some mistakes diverge; their figures are inf or NaN, never a match
        figures = {e.id: dict(_leaves(manual_figures(desc, build=e))) for e in tried}
    for erratum, (path, printed) in zip(errata, paths):
        hits = [(e.id, figures[e.id][path]) for e in tried
                if not path.startswith("target") and reproduces(printed, figures[e.id][path])]
        erratum["explained_by"] = hits[0][0] if hits else None
        erratum["explained_value"] = hits[0][1] if hits else None
        erratum["also_explained_by"] = [h[0] for h in hits[1:]]
    return [e.id for e in tried]


def _floats_or_none(tree):
    if isinstance(tree, dict):
        return {k: _floats_or_none(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_floats_or_none(v) for v in tree]
    return None if tree is None else float(tree)


def table(rep):
    """The report as a text table, one figure a line."""
    lines = [
        "The seed's worked example: 2-2-2 sigmoid network, shared frozen biases, E = sum 1/2 (target - out)^2,"
        " SGD lr = 0.5",
        "computed = manual engine (numpy, float64); autograd = torch confirms it "
        f"(rtol {rep['tolerance']['rtol']:g}); seed = the figure the post prints",
        "",
        f"{'figure':<34} {'computed':>22} {'autograd':>9} {'seed':>14}  agreement",
        "-" * 96,
    ]
    for r in rep["rows"]:
        if r["figure"] == "target_o2":
            continue
        ok = "ok" if r["confirmed"] else "MISMATCH"
        if r["seed"] is None:
            agree = "(not printed)"
        elif r["agrees"]:
            agree = "reproduced"
        else:
            agree = f"ERRATUM: differs by {r['manual'] - float(r['seed']):+.3e}"
        seed = r["seed"] if r["seed"] is not None else "-"
        lines.append(f"{r['figure']:<34} {r['manual']:>22.15g} {ok:>9} {seed:>14}  {agree}")
    lines += ["", f"errata: {len(rep['errata'])}"]
    for e in rep["errata"]:
        lines.append(f"  {e['figure']}: seed prints {e['seed']!r}, correct value {e['correct']!r}"
                     f" (difference {e['difference']:+.3e})" + (f"; {e['note']}" if e.get("note") else ""))
    if rep.get("errata_tried") is not None:
        lines += ["", f"errata explained: each of the {len(rep['errata_tried'])} zoo mistakes that apply to this"
                  " network (backprop-check zoo) run on it; the first that reproduces the printed digits"]
        for e in rep["errata"]:
            if e["explained_by"]:
                also = f" (also: {', '.join(e['also_explained_by'])})" if e["also_explained_by"] else ""
                lines.append(f"  {e['figure']}: {e['explained_by']} gives {e['explained_value']!r},"
                             f" the seed's {e['seed']!r}{also}")
            else:
                lines.append(f"  {e['figure']}: no zoo mistake reproduces {e['seed']!r}")
    lines.append("every computed value confirmed by autograd: "
                 + ("yes" if rep["confirmed_by_autograd"] else "NO"))
    return "\n".join(lines)
