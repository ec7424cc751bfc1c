"""`backprop-check export SPEC DIR`: what an implementation that cannot be driven needs, as files
(the layout: layout.py, docs/traces.md): the description as parsed, the initial state, every
iteration's batch and dropout masks for run.steps iterations, and a manifest naming them with the
names, dtypes and shapes the implementation must write per iteration.

DIR must be missing, empty, or an earlier export (its marker file, written first, says so; it is
then replaced, its results/ stay). The manifest is removed first and written last, atomically: an interrupted export leaves no manifest,
and `verify` refuses the directory until it is exported again."""
import os
import shutil
from pathlib import Path

import numpy as np

import manual.data
import manual.init

from . import layout
from .layout import TraceError


def prepare(folder):
    """Check that `folder` may receive an export (TraceError otherwise) and clear an earlier one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TraceError(str(folder), "not a directory")
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / layout.MARKER).is_file():  # (an interrupted export has it: it is written first)
            raise TraceError(str(folder), f"not empty and not an earlier export (no {layout.MARKER}): "
                                          "give a new or empty directory")
        (folder / layout.MANIFEST).unlink(missing_ok=True)  # first: an export interrupted from here on leaves none
        for old in ("initial", "batches"):
            shutil.rmtree(folder / old, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / layout.MARKER).write_text("a trace directory of `backprop-check export` (docs/traces.md)\n")
        (folder / "results").mkdir(exist_ok=True)
    except OSError as e:
        raise TraceError(str(folder), f"cannot be written ({e.strerror or e})") from None
    return folder


def export(desc, folder):
    """Write the export of the parsed description `desc` into `folder`; returns the manifest."""
    folder = prepare(folder)
    dtype = np.dtype(desc["run"]["dtype"])
    state = {k: v.astype(dtype) for k, v in manual.init.initial_state(desc).items()}
    layout.atomic_json(folder / layout.DESCRIPTION, layout.as_json(desc))
    initial = {}
    for name, value in state.items():
        initial[name] = {"file": f"initial/{name}.npy", "shape": list(value.shape)}
        _save(folder, initial[name]["file"], value)
    batches, first = [], None
    source = manual.data.batches(desc, dtype)
    for it in range(desc["run"]["steps"]):
        x, y = next(source)
        masks = manual.data.dropout_masks(desc, it, len(x)) or {}
        first = first or (x, y, masks)
        where = layout.iteration_dir(it)
        entry = {"iteration": it, "samples": len(x), "x": f"{where}/x.npy", "y": f"{where}/y.npy"}
        _save(folder, entry["x"], x)
        _save(folder, entry["y"], y)
        if masks:
            entry["masks"] = {name: f"{where}/masks/{name}.npy" for name in masks}
            for name, mask in masks.items():
                _save(folder, entry["masks"][name], mask)
        batches.append(entry)
    manifest = {
        "layout": layout.LAYOUT, "description": layout.DESCRIPTION, "dtype": str(dtype),
        "steps": desc["run"]["steps"], "initial_state": initial, "batches": batches,
        "results": {"file": "results/{iteration:06d}.npz", **results_spec(desc, state, first)},
    }
    layout.atomic_json(folder / layout.MANIFEST, manifest)  # last: the export is complete
    return manifest


def results_spec(desc, state, first):
    """{"required": {key: shape}, "optional": {key: shape}}: the keys a results file holds, from
    one step of the twin on iteration 0's batch ("N" for the batch's size in the batch-leading groups)."""
    from ..twin.model import Twin, prepare_device  # torch, only here
    x, y, masks = first
    prepare_device(desc["run"]["device"])
    twin = Twin(desc, state)
    r = twin.train_step(x, y, masks=masks) if masks else twin.train_step(x, y)
    spec = {"required": {}, "optional": {}}
    for group in layout.REQUIRED + layout.OPTIONAL:
        value = r.get(group)
        if value is None or (isinstance(value, dict) and not value):
            continue
        kind = "required" if group in layout.REQUIRED else "optional"
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in items:
            shape = list(np.shape(v))
            if group in layout.BATCH_LEADING and shape and shape[0] == len(x):
                shape[0] = "N"
            spec[kind][group if name is None else f"{group}/{name}"] = shape
    return spec


def _save(folder, relative, value):
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        np.save(path, np.asarray(value), allow_pickle=False)
    except OSError as e:
        raise TraceError(str(path), f"cannot be written ({e.strerror or e})") from None
