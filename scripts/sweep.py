"""False-alarm sweep: correct implementations over many seeds must never fail; every zoo mistake
must still be caught in float32.

    python scripts/sweep.py                 the full sweep (by hand: about 15 minutes on 2 cores)
    python scripts/sweep.py --quick         a few seeds and steps (seconds; the test suite runs it)
    python scripts/sweep.py --json          one JSON document instead of the table
    python scripts/sweep.py --docs          also write the table into docs/verdicts.md (between its
                                            sweep markers), with the versions it ran on
    python scripts/sweep.py --from-json F   the table of an earlier --json run (nothing is run)

Three parts, each printing its count:

1. float32: SEEDS seeds of each description below (the seed draws the initial weights and the
   data) in the modes recommended for float32 (resync and shadow), with the built-in engine (a layer
   list: fewer seeds and steps, LAYERED_CAP).
   A failure of a correct engine is a false alarm: the count must be 0.
2. float64: every shipped description, free mode (the default), STEPS64 steps: false alarms, 0.
3. the zoo in float32: every mistake, run in float32 (resync and shadow), must be caught at the
   iteration, stage and tensor where it first acts, as in float64.
"""
import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

SEEDS, STEPS32, STEPS64 = 50, 2000, 20000
QUICK_SEEDS, QUICK_STEPS32, QUICK_STEPS64 = 2, 300, 2000
# A layer list's step costs tens of times an MLP's (convolutions, batch norm, both sides): its runs
# are capped at these (seeds, float32 steps, float64 steps); the table shows the counts each ran.
LAYERED_CAP = (10, 500, 2000)


def _random(seed, n=64):
    return {"random": {"n": n, "seed": 1000 + seed}, "batch_size": 16, "shuffle": True}


# name -> raw description for a seed: the kinds that raised false alarms in the field, float32
FLOAT32 = {
    "classifier-adam": lambda s: {  # leaky_relu/gelu classifier, Adam, cross-entropy
        "network": {"sizes": [4, 8, 6, 3],
                    "activation": [{"name": "leaky_relu", "negative_slope": 0.1},
                                   {"name": "gelu", "approximate": "tanh"}, "identity"],
                    "loss": "cross_entropy"},
        "init": {"seed": s}, "optimizer": {"name": "adam", "lr": 0.01}, "data": _random(s)},
    "steep-leaky-sgd": lambda s: {  # leaky_relu with a slope above 1, plain SGD, MSE
        "network": {"sizes": [3, 10, 10, 2],
                    "activation": [{"name": "leaky_relu", "negative_slope": 1.5},
                                   {"name": "leaky_relu", "negative_slope": 1.5}, "identity"],
                    "loss": "mse"},
        "init": {"seed": s}, "optimizer": {"name": "sgd", "lr": 0.005}, "data": _random(s)},
    "four-layer-momentum": lambda s: {  # tanh/relu/sigmoid, SGD momentum 0.9
        "network": {"sizes": [5, 16, 12, 8, 3], "activation": ["tanh", "relu", "sigmoid", "identity"],
                    "loss": "mse"},
        "init": {"seed": s}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "data": _random(s)},
    "moons-adam": lambda s: {  # the shipped moons run's network and optimizer
        "network": {"sizes": [2, 16, 16, 1], "activation": "tanh", "loss": "mse"},
        "init": {"seed": s}, "optimizer": {"name": "adam", "lr": 0.01},
        "data": {"toy": {"name": "moons", "n": 200, "noise": 0.2, "seed": 1000 + s}, "batch_size": 20,
                 "shuffle": True}},
    "gelu-rmsprop-bce": lambda s: {  # exact gelu, RMSprop, logits with BCE
        "network": {"sizes": [6, 12, 12, 4], "activation": ["gelu", "gelu", "identity"],
                    "loss": "bce_with_logits"},
        "init": {"seed": s}, "optimizer": {"name": "rmsprop", "lr": 0.003}, "data": _random(s)},
    "relu-adamw-clip-cosine": lambda s: {  # relu/softplus, AdamW, norm clipping, cosine schedule
        "network": {"sizes": [4, 16, 16, 3], "activation": ["relu", "softplus", "identity"],
                    "loss": "cross_entropy"},
        "init": {"seed": s}, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "T_max": 1000},
        "clip": {"max_norm": 1.0}, "data": _random(s)},
    "lenet-bars": lambda s: {  # convolutions, ReLU, max pooling, Linear, on 8x8 images of bars
        "network": {"input_shape": [1, 8, 8], "loss": "cross_entropy", "layers": [
            {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "ReLU"},
            {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Conv2d", "out_channels": 6, "kernel_size": 3},
            {"type": "ReLU"}, {"type": "Flatten"}, {"type": "Linear", "out_features": 12}, {"type": "Tanh"},
            {"type": "Linear", "out_features": 3}]},
        "init": {"seed": s}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "data": {"images": {"name": "bars", "n": 64, "size": 8, "seed": 1000 + s}, "batch_size": 16,
                 "shuffle": True}},
    "batchnorm-residual-dropout": lambda s: {  # batch norm, a residual block, dropout, Adam
        "network": {"input_shape": [6], "loss": "cross_entropy", "layers": [
            {"type": "Linear", "out_features": 16, "bias": False}, {"type": "BatchNorm1d"}, {"type": "Tanh"},
            {"type": "Residual", "layers": [{"type": "Linear", "out_features": 16}, {"type": "ReLU"}]},
            {"type": "Dropout", "p": 0.2}, {"type": "LayerNorm"}, {"type": "Linear", "out_features": 3}]},
        "init": {"seed": s}, "optimizer": {"name": "adam", "lr": 0.01}, "data": _random(s)},
}
MODES32 = ("resync", "shadow")


def _init_worker():
    import torch
    torch.set_num_threads(1)  # two workers on two cores: torch's own threads would only contend


def _one(job):
    """(kind, name, mode, seed, steps) -> a row: the verdict of one run."""
    from torch_ref.description import spec
    from torch_ref.lockstep.run import lockstep
    kind, name, mode, seed, steps = job
    if kind == "float32":
        raw = FLOAT32[name](seed)
        raw["run"] = {"steps": steps, "dtype": "float32"}
        desc = spec.parse(raw)
    else:
        desc = spec.load(_shipped(name))
        desc["run"] = {**desc["run"], "steps": steps}
    t = time.perf_counter()
    r = lockstep(desc, mode=mode)
    m = r.first_mismatch
    return {"kind": kind, "description": name, "mode": mode, "seed": seed, "steps": steps, "ok": r.ok,
            "excused": r.rounding.get("iterations", 0), "used": r.rounding.get("largest_fraction_of_allowance", 0.0),
            "where": None if m is None else [m.iteration, m.stage, m.name],
            "seconds": round(time.perf_counter() - t, 2)}


def _shipped(name):
    return str(resources.files("torch_ref") / "specs" / f"{name}.toml")


def _shipped_float64():
    import tomllib
    names = []
    for f in sorted((resources.files("torch_ref") / "specs").iterdir()):
        if f.name.endswith(".toml"):
            raw = tomllib.loads(f.read_text())
            if raw.get("run", {}).get("dtype", "float64") == "float64":
                names.append(f.name[:-5])
    return names


def _zoo32(e_id, mode):
    """One zoo mistake run in float32 (mode): where it is caught, and where it must be."""
    from torch_ref.zoo import runner as zoo
    from torch_ref.lockstep.run import lockstep
    e = zoo.entry(e_id)
    desc = e.description()
    desc["run"] = {**desc["run"], "dtype": "float32"}
    r = lockstep(desc, impl=e(desc), mode=mode)
    m = r.first_mismatch
    where = None if m is None else [m.iteration, m.stage, m.name]
    return {"mistake": e.id, "mode": mode, "where": where,
            "expected": [e.iteration, e.stage, e.tensor], "ok": where == [e.iteration, e.stage, e.tensor]}


def layered(raw):
    return "layers" in raw.get("network", {})


def budget(raw, seeds, steps32, steps64):
    """(seeds, float32 steps, float64 steps) for a description: LAYERED_CAP for a layer list."""
    if not layered(raw):
        return seeds, steps32, steps64
    return tuple(min(a, b) for a, b in zip((seeds, steps32, steps64), LAYERED_CAP))


def sweep(seeds, steps32, steps64, workers=2):
    import tomllib
    from torch_ref.zoo import runner as zoo
    jobs = []
    for n in FLOAT32:
        k, s32, _ = budget(FLOAT32[n](0), seeds, steps32, steps64)
        jobs += [("float32", n, mode, s, s32) for mode in MODES32 for s in range(k)]
    for n in _shipped_float64():
        _, _, s64 = budget(tomllib.loads(Path(_shipped(n)).read_text()), seeds, steps32, steps64)
        jobs.append(("float64", n, "free", 0, s64))
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        rows = list(pool.map(_one, jobs, chunksize=1))
        zoo_rows = list(pool.map(_zoo32, *zip(*[(e.id, mode) for e in zoo.ENTRIES for mode in MODES32])))
    return rows, zoo_rows


def table(rows, zoo_rows):
    w = max([len("description"), *(len(r["description"]) for r in rows)])
    lines = [f"{'kind':<8} {'description':<{w}} {'mode':<7} {'runs':>5} {'steps':>6} {'false alarms':>13}"
             f" {'fixed-rule fails':>16} {'worst use':>10}"]
    groups = {}
    for r in rows:
        groups.setdefault((r["kind"], r["description"], r["mode"], r["steps"]), []).append(r)
    for (kind, name, mode, steps), rs in groups.items():
        bad = [r for r in rs if not r["ok"]]
        fixed = sum(r["excused"] > 0 for r in rs)  # runs the fixed tolerance alone would have failed
        used = max(r["used"] for r in rs)
        lines.append(f"{kind:<8} {name:<{w}} {mode:<7} {len(rs):>5} {steps:>6} {len(bad):>13} {fixed:>16} {used:>10.3f}")
        for r in bad:
            lines.append(f"    seed {r['seed']}: failed at {r['where']}")
    alarms = sum(not r["ok"] for r in rows)
    lines.append(f"false alarms: {alarms} in {len(rows)} runs of correct code")
    lines.append("(fixed-rule fails: runs in which the dtype's fixed atol/rtol alone would have raised an alarm,"
                 " passed by the measured rounding allowance; worst use: the largest fraction of that allowance"
                 " any element needed)")
    lines.append("")
    missed = [z for z in zoo_rows if not z["ok"]]
    for z in missed:
        lines.append(f"    zoo {z['mistake']} ({z['mode']}): caught at {z['where']}, expected {z['expected']}")
    lines.append(f"zoo mistakes in float32 caught where they first act: {len(zoo_rows) - len(missed)} / {len(zoo_rows)}")
    return "\n".join(lines)


DOC = Path(__file__).resolve().parents[1] / "docs" / "verdicts.md"
BEGIN, END = "<!-- sweep: written by scripts/sweep.py --docs -->", "<!-- /sweep -->"


def write_docs(text, seeds, s32, s64):
    """Put the table between the markers of docs/verdicts.md (written whole, then renamed)."""
    import numpy
    import torch
    doc = DOC.read_text()
    head = (f"`python scripts/sweep.py` ({seeds} seeds, {s32} float32 steps, {s64} float64 steps;"
            f" torch {torch.__version__}, numpy {numpy.__version__}, {platform.machine()}):")
    block = f"{BEGIN}\n{head}\n\n```\n{text}\n```\n{END}"
    i, j = doc.index(BEGIN), doc.index(END) + len(END)
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(doc[:i] + block + doc[j:])
    os.replace(tmp, DOC)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seeds and steps")
    p.add_argument("--json", action="store_true")
    p.add_argument("--docs", action="store_true", help="write the table into docs/verdicts.md")
    p.add_argument("--from-json", metavar="FILE", help="the table of an earlier --json run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, help="override the number of seeds")
    p.add_argument("--steps", type=int, help="override the float32 steps")
    p.add_argument("--steps64", type=int, help="override the float64 steps")
    a = p.parse_args(argv)
    seeds, s32, s64 = (QUICK_SEEDS, QUICK_STEPS32, QUICK_STEPS64) if a.quick else (SEEDS, STEPS32, STEPS64)
    seeds, s32, s64 = a.seeds or seeds, a.steps or s32, a.steps64 or s64
    if a.from_json:
        done = json.loads(Path(a.from_json).read_text())
        rows, zoo_rows = done["rows"], done["zoo"]
        seeds = max(r["seed"] for r in rows if r["kind"] == "float32") + 1
        s32 = max(r["steps"] for r in rows if r["kind"] == "float32")
        s64 = max(r["steps"] for r in rows if r["kind"] == "float64")
    else:
        rows, zoo_rows = sweep(seeds, s32, s64, a.workers)
    alarms, missed = sum(not r["ok"] for r in rows), sum(not z["ok"] for z in zoo_rows)
    if a.json:
        print(json.dumps({"false_alarms": alarms, "runs": len(rows), "zoo_missed": missed,
                          "zoo_runs": len(zoo_rows), "rows": rows, "zoo": zoo_rows}, indent=1))
    else:
        print(table(rows, zoo_rows))
    if a.docs:
        write_docs(table(rows, zoo_rows), seeds, s32, s64)
    return 0 if alarms == 0 and missed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
