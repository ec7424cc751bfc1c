"""The manual side is the independent opinion: importing and running it never loads torch."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in (ROOT / "manual").glob("*.py") if p.stem != "__init__")

PROGRAM = """
import importlib, sys, numpy as np
for name in {modules!r}:
    importlib.import_module("manual." + name)
import manual.trainer, manual.init, manual.data
desc = {{"network": {{"sizes": [2, 3, 2], "activation": ["tanh", "sigmoid"], "bias": "per-neuron",
                      "loss": "mse"}},
        "init": {{"seed": 0}}, "optimizer": {{"name": "sgd", "lr": 0.1}},
        "data": {{"random": {{"n": 4, "seed": 1}}, "batch_size": 2}},
        "run": {{"steps": 2, "dtype": "float64", "device": "cpu"}}}}
t = manual.trainer.Trainer(desc)
t.load_state_dict(manual.init.initial_state(desc))
x, y = manual.data.dataset(desc)
t.train_step(x[:2], y[:2])
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_manual_never_imports_torch():
    p = subprocess.run([sys.executable, "-c", PROGRAM.format(modules=MODULES)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[]", p.stdout
    assert len(MODULES) >= 6
