"""An outside program for trace files (docs/traces.md): reads an export of `backprop-check export`,
trains on its batches with the manual engine (numpy; any other program would do the same with its
own), and writes its results per iteration as DIR/results/NNNNNN.npz, for `backprop-check verify`.

    python clients/trace_mlp.py DIR [--every K] [--required-only] [--planted-bug]

--every K          write iterations 0, K, 2K, ... only (a partial trace; every iteration still trains)
--required-only    write output, loss, grads and state_dict only (no deltas, no optimizer_state)
--planted-bug      write as "loss" the running mean of the losses so far (a logging habit): right at
                   iteration 0, wrong from iteration 1 on

It reads nothing but DIR: the manifest names every file (layout: torch_ref/traces/layout.py).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

import manual.trainer


def load(folder, relative):
    return np.load(Path(folder) / relative, allow_pickle=False)


def write(folder, it, result, dtype, required_only=False):
    """One iteration's results file: "output", "loss", "GROUP/NAME" keys, every array of the run's dtype."""
    arrays = {"output": result["output"], "loss": np.asarray(result["loss"])}
    groups = ("grads", "state_dict") + (() if required_only else ("deltas", "optimizer_state"))
    for group in groups:
        for name, value in (result.get(group) or {}).items():
            arrays[f"{group}/{name}"] = value
    np.savez(Path(folder) / "results" / f"{it:06d}.npz", **{k: np.asarray(v, dtype=dtype) for k, v in arrays.items()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--required-only", action="store_true")
    p.add_argument("--planted-bug", action="store_true")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    desc = json.loads((folder / manifest["description"]).read_text())
    dtype = np.dtype(manifest["dtype"])
    engine = manual.trainer.build(desc)
    engine.load_state_dict({name: load(folder, t["file"]) for name, t in manifest["initial_state"].items()})
    losses = []
    for batch in manifest["batches"]:
        x, y = load(folder, batch["x"]), load(folder, batch["y"])
        masks = {name: load(folder, f) for name, f in batch.get("masks", {}).items()}
        result = engine.train_step(x, y, masks=masks) if masks else engine.train_step(x, y)
        losses.append(result["loss"])
        if args.planted_bug:
            result = {**result, "loss": float(np.mean(losses))}
        if batch["iteration"] % args.every == 0:
            write(folder, batch["iteration"], result, dtype, args.required_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
