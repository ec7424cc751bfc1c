"""The layout of a trace directory (docs/traces.md), numpy only:

    DIR/.backprop-check-export         written first: the directory is an export (export may replace it)
    DIR/manifest.json                  written last, atomically: what the export holds (below)
    DIR/description.json               the description, as parsed
    DIR/initial/NAME.npy               the initial state, one file per tensor, torch's names
    DIR/batches/NNNNNN/x.npy, y.npy    iteration NNNNNN's batch (6 digits, from 000000)
    DIR/batches/NNNNNN/masks/NAME.npy  its dropout keep-masks (bool), a network with dropout only
    DIR/results/NNNNNN.npz             written by the implementation: iteration NNNNNN's results

A results file holds the keys "output", "loss", "grads/NAME", "state_dict/NAME" (required) and,
optionally, "deltas/NAME", "optimizer_state/NAME", "forward/NAME"; every array of the run's dtype
(a bool or an integer nowhere), with the manifest's shapes ("N": the iteration's batch size).
Any subset of the iterations may have a file; the optional groups given must be the same in every
file (deltas and forward: any subset of their names; optimizer_state: all, "NAME.step" may be left
out).
"""
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import SpecError

LAYOUT = 1  # the manifest's "layout": raised when the layout changes in a way old readers would misread
MANIFEST, DESCRIPTION, MARKER = "manifest.json", "description.json", ".backprop-check-export"
REQUIRED = ("output", "loss", "grads", "state_dict")
OPTIONAL = ("deltas", "optimizer_state", "forward")
BATCH_LEADING = ("output", "deltas", "forward")  # groups whose first dimension is the batch's ("N")
RESULT_FILE = re.compile(r"(\d{6})\.npz\Z")


class TraceError(SpecError):
    """A trace directory or file that cannot be used: one line naming the file (and the key), exit 2."""


def iteration_dir(it):
    return f"batches/{it:06d}"


def result_file(it):
    return f"results/{it:06d}.npz"


def atomic_json(path, tree):
    """Write `tree` as JSON to `path` through a temporary file and a rename: never half written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(tree, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def jsonable(value):
    """JSON's default for what a parsed description holds besides plain values (numpy scalars, sets)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def as_json(desc):
    """The description as the trace stores it (plain JSON values), for writing and comparing."""
    return json.loads(json.dumps(desc, default=jsonable))


def read_manifest(folder):
    """The manifest of the export in `folder`; TraceError naming the file when there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise TraceError(str(path), "no such file: not an export of `backprop-check export`, or one that was"
                                    " interrupted (export again)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceError(str(path), f"not readable JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("layout") != LAYOUT:
        raise TraceError(str(path), f"layout {manifest.get('layout') if isinstance(manifest, dict) else None!r}; "
                                    f"this version reads layout {LAYOUT}")
    return manifest


def expected_shape(shape, samples):
    """A manifest shape (a list, "N" for the batch's size) for a batch of `samples` samples."""
    return tuple(samples if d == "N" else d for d in shape)


def result_names(manifest):
    """{key: manifest shape} of every key a results file may hold, and the required ones."""
    spec = manifest["results"]
    return {**spec["required"], **spec["optional"]}, set(spec["required"])
