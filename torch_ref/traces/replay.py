"""`backprop-check verify SPEC DIR`: the results an implementation wrote into an export (layout.py)
replayed against the twin, through the one lockstep loop: `Trace` is one more implementation,
whose train_step reads the iteration's results file. An iteration without a file is UNCHECKED
(contract.py): nothing is compared there and the twin keeps its own trajectory, so a partial
trace (every k-th iteration) is judged on the whole trajectory; the implementation's state is the
file's where there is one.

Every file is checked as it is read: an unknown key, a missing required one, an optional group
given in some files and not others, a dtype other than the run's, a wrong shape: TraceError, one
line naming the file and the key (exit 2). The trace is not the description's (another SPEC, or
an export made before the description changed): TraceError naming the field."""
import json
import zipfile
from pathlib import Path

import numpy as np

from ..implementation.contract import UNCHECKED
from ..implementation.plugin import Guard
from ..description import spec
from . import layout
from .layout import TraceError

# the stage each group of a results file feeds (lockstep/verdict.py's STAGES)
STAGE_OF = {"forward": "forward", "output": "output", "loss": "loss", "deltas": "delta", "grads": "grad",
            "optimizer_state": "optim", "state_dict": "param"}


def open_trace(desc, folder):
    """(the description the export was made from, a Trace of `folder`): `desc` (the parsed SPEC)
    with the export's steps and dtype, TraceError where the export is of another description."""
    folder = Path(folder)
    manifest = layout.read_manifest(folder)
    desc = spec.override(desc, manifest["steps"], manifest["dtype"], None)
    exported = _exported_description(folder, manifest)
    given = layout.as_json(desc)
    for section in sorted(set(given) | set(exported)):
        a, b = given.get(section), exported.get(section)
        if section == "run":  # (the device is the verifier's choice)
            a, b = ({k: v for k, v in (s or {}).items() if k != "device"} for s in (a, b))
        if a != b:
            raise TraceError(str(folder / layout.DESCRIPTION),
                             f"[{section}] differs from the SPEC's: this export is of another description"
                             " (export it again)")
    return desc, Trace(folder, manifest)


def _exported_description(folder, manifest):
    path = folder / manifest.get("description", layout.DESCRIPTION)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceError(str(path), f"not readable ({e})") from None


class TraceGuard(Guard):
    """The guard of a trace: its calls are files read here, not someone's code: a bad file is bad
    input (TraceError, exit 2), never the implementation's failure; no time limit, no copies needed."""

    def __init__(self, trace, name):
        super().__init__(trace, name, trusted=True, timeout=0)

    def call(self, what, fn, *args, label=None):
        return fn(*args)


class Trace:
    """The implementation's results as files: train_step(x, y) of iteration i returns
    results/NNNNNN.npz as the plug-in contract's dict, or UNCHECKED where there is none."""

    def __init__(self, folder, manifest):
        self.folder, self.manifest = Path(folder), manifest
        self.dtype = np.dtype(manifest["dtype"])
        self.names, self.required = layout.result_names(manifest)
        self.steps = manifest["steps"]
        self.available = self._listed()
        self.it, self.read, self.keys = -1, [], None  # keys: the first file's, which every other must have

    def _listed(self):
        """The iterations with a results file; TraceError for a file in results/ that is not one."""
        found = set()
        results = self.folder / "results"
        for path in sorted(results.iterdir()) if results.is_dir() else ():
            m = layout.RESULT_FILE.match(path.name)
            if m is None or int(m.group(1)) >= self.steps:
                raise TraceError(str(path), f"not a results file: expected NNNNNN.npz for an iteration from 0 to"
                                            f" {self.steps - 1} (000000.npz ... {self.steps - 1:06d}.npz)")
            found.add(int(m.group(1)))
        if not found:
            raise TraceError(str(results), "no results file: nothing to check (the implementation writes"
                                           " results/NNNNNN.npz, docs/traces.md)")
        return found

    def load_state_dict(self, state):
        """The initial state is the export's: nothing to load."""

    def train_step(self, x, y, masks=None):
        self.it += 1
        if self.it not in self.available:
            return UNCHECKED
        samples = self.manifest["batches"][self.it]["samples"]
        arrays = self.arrays(self.folder / layout.result_file(self.it), samples)
        self.read.append(self.it)
        out = {}
        for key, value in arrays.items():
            group, sep, name = key.partition("/")
            if sep:
                out.setdefault(group, {})[name] = value
            else:
                out[key] = float(value) if key == "loss" else value
        return out

    def arrays(self, path, samples):
        """{key: array} of one results file, every key, dtype and shape checked (TraceError)."""
        try:
            with np.load(path, allow_pickle=False) as held:
                arrays = {key: held[key] for key in held.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise TraceError(str(path), f"not a readable .npz file ({' '.join(str(e).split())})") from None
        for key, value in arrays.items():
            if key not in self.names:
                raise TraceError(str(path), f"key {key!r} is not a result of this network ({_examples(self.names)})")
            if value.dtype != self.dtype:
                raise TraceError(str(path), f"key {key!r} has dtype {value.dtype}; expected {self.dtype} (the run's)")
            shape = layout.expected_shape(self.names[key], samples)
            if value.shape != shape:
                raise TraceError(str(path), f"key {key!r} has shape {list(value.shape)}; expected {list(shape)}")
        for key in sorted(self.required - set(arrays)):
            raise TraceError(str(path), f"key {key!r} is missing (required in every results file)")
        self._same_keys(path, set(arrays))
        return arrays

    def _same_keys(self, path, keys):
        """The optional keys of every file are the first one's; optimizer_state's all of them but ".step"."""
        if self.keys is None:
            groups = {k.partition("/")[0] for k in keys}
            if "optimizer_state" in groups:
                for key in self.names:
                    if key.startswith("optimizer_state/") and not key.endswith(".step") and key not in keys:
                        raise TraceError(str(path), f"key {key!r} is missing (optimizer_state is given: all of it)")
            self.keys, self.first = keys, path.name
            return
        for key in sorted(keys ^ self.keys):
            missing = key in self.keys
            raise TraceError(str(path), f"key {key!r} is {'missing' if missing else 'given'} here and "
                                        f"{'given' if missing else 'missing'} in {self.first}: give the same keys in every file")

    def checked(self, result, skipped=()):
        """What the run compared: {"iterations": [...], "of": steps, "stages": [...]}, the iterations
        up to the one a failure stopped at."""
        last = result.first_mismatch.iteration if result.first_mismatch else self.steps
        its = [it for it in self.read if it <= last]
        groups = {k.partition("/")[0] for k in (self.keys or ())}
        stages = [s for g, s in STAGE_OF.items() if g in groups and s not in skipped]
        return {"iterations": its, "of": self.steps, "stages": stages}


def _examples(names):
    keys = list(names)
    return "expected " + ", ".join(repr(k) for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
