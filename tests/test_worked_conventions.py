"""Kinds 2, 4, 5 and 6 of docs/conventions.md's six (L2 as real code writes it, loss scale and
reporting, schedules, ε inside the square root): each example passes as written under the
description lines the page shows, and with one planted bug (one line replaced) fails at the right
iteration, stage and tensor. Kinds 1, 3 and 6's momentum are tests/test_layouts.py's and
tests/test_own_loop.py's."""
import re
import tomllib

import pytest

from torch_ref import check
from torch_ref.description import spec

from test_layouts import DOC, loaded


def declared():
    """{name: the TOML of a `# description: NAME` block} of docs/conventions.md."""
    found = re.findall(r"```toml\n# description: ([^\n]+)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return {name: tomllib.loads(text) for name, text in found}


def description(name):
    """The examples' base description (linear regression 4 -> 3, 12 samples in batches of 4, SGD at
    lr 0.1, float64) completed by the page's block `name`: whole sections replace the base's, other
    keys are [network]'s (as tests/test_docs.py completes a fragment)."""
    base = {"network": {"sizes": [4, 3], "activation": ["identity"], "loss": "mse"}, "init": {"seed": 0},
            "optimizer": {"name": "sgd", "lr": 0.1}, "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4},
            "run": {"steps": 6, "dtype": "float64"}}
    for key, value in declared()[name].items():
        (base if key in spec.SECTIONS else base["network"])[key] = value
    return base


CASES = [  # (example, factory, description, planted bug, where it must fail: iteration, stage, tensor)
    ("decay on the weights", "Regression", "decay on the weights",
     ("self.b = self.b - LR * gb", "self.b = self.b - LR * (gb + LMBDA * self.b)"), (0, "param", "layers.0.bias")),
    ("penalty in the loss", "Regression", "penalty in the loss",
     ('"W": X.T @ d + REG * self.W', '"W": X.T @ d'), (0, "grad", "layers.0.weight")),
    ("penalty in the loss", "Regression", "penalty in the loss",
     ("+ 0.5 * REG * np.sum(self.W ** 2)", "+ REG * np.sum(self.W ** 2)"), (0, "loss", "loss")),
    ("batch-mean loss", "Regression", "batch-mean loss",
     ("d = (out - Y) / len(X)", "d = (out - Y) / out.size"), (0, "grad", "layers.0.bias")),
    ("schedules", "StepDecay", "step decay per epoch",
     ("0.5 ** (t // PER_EPOCH)", "0.5 ** ((t + 1) // PER_EPOCH)"), (2, "param", "layers.0.weight")),
    ("schedules", "InverseTime", "inverse time",
     ("LR0 / (1 + 0.5 * t)", "LR0 / (1 + 0.5 * (t + 1))"), (0, "param", "layers.0.weight")),
    ("schedules", "LinearToFloor", "linear to a floor",
     ("min(t, 3) / 3", "t / 3"), (4, "param", "layers.0.weight")),
    ("eps inside the square root", "Regression", "eps inside the square root",
     ("np.sqrt(self.cache[k] + EPS)", "np.sqrt(self.cache[k]) + EPS"), (0, "param", "layers.0.weight")),
    ("eps inside the square root", "Regression", "eps inside the square root",
     ("DECAY * self.cache[k] + (1 - DECAY) * g[k] ** 2", "(1 - DECAY) * self.cache[k] + DECAY * g[k] ** 2"),
     (0, "optim", "layers.0.weight.square_avg")),
]


@pytest.mark.parametrize("example,factory,name,bug,where", CASES, ids=[f"{c[2]}:{c[4][1]}" for c in CASES])
def test_a_worked_convention_passes_and_its_planted_bug_fails_where_it_is(example, factory, name, bug, where):
    result = check(description(name), loaded(example)[factory], attribution=False)
    assert result.ok, result.summary()
    assert {"output", "loss", "grad", "param"} <= set(result.stats) and where[1] in result.stats
    bad = check(description(name), loaded(example, plant=bug)[factory], attribution=False)
    m = bad.first_mismatch
    assert not bad.ok and (m.iteration, m.stage, m.name) == where, bad.summary()


# (example, factory, description, what the plain description (no lines declared) gets wrong first)
UNDECLARED = [
    ("decay on the weights", "Regression", "decay on the weights", (0, "param", "layers.0.weight")),
    ("penalty in the loss", "Regression", "penalty in the loss", (0, "loss", "loss")),
    ("batch-mean loss", "Regression", "batch-mean loss", (0, "loss", "loss")),
    ("schedules", "InverseTime", "inverse time", (1, "param", "layers.0.weight")),
    ("eps inside the square root", "Regression", "eps inside the square root", (0, "param", "layers.0.weight")),
]


@pytest.mark.parametrize("example,factory,name,where", UNDECLARED, ids=[u[2] for u in UNDECLARED])
def test_without_its_declaration_a_correct_example_fails(example, factory, name, where):
    """The description lines are what makes the example pass: torch's defaults report it wrong."""
    desc = description(name)
    undeclared = {**desc, "network": {**desc["network"], "loss": "mse"}, "optimizer": {"name": "sgd", "lr": 0.1}}
    undeclared.pop("penalty", None), undeclared.pop("scheduler", None)
    if name == "eps inside the square root":
        undeclared["optimizer"] = {k: v for k, v in desc["optimizer"].items() if k != "eps_inside_sqrt"}
    m = check(undeclared, loaded(example)[factory], attribution=False).first_mismatch
    assert m is not None and (m.iteration, m.stage, m.name) == where, m


def test_a_reported_loss_of_another_reduction_passes_with_the_loss_stage_skipped():
    desc = description("batch-mean loss")
    reported = loaded("batch-mean loss", "reported loss")["Reported"]
    first = check(desc, reported, attribution=False).first_mismatch
    assert (first.iteration, first.stage) == (0, "loss")
    skipped = check(desc, reported, skip_stages=["loss"], attribution=False)
    assert skipped.ok and skipped.skipped == ["loss"] and "loss" not in skipped.stats
    bug = ("d = (out - Y) / len(X)", "d = (out - Y) / out.size")
    bad = check(desc, loaded("batch-mean loss", "reported loss", plant=bug)["Reported"], skip_stages=["loss"],
                attribution=False)
    assert (bad.first_mismatch.iteration, bad.first_mismatch.stage) == (0, "grad")


def test_the_per_epoch_schedule_one_epoch_off_is_diagnosed_in_epochs():
    bug = ("0.5 ** (t // PER_EPOCH)", "0.5 ** ((t + 1) // PER_EPOCH)")
    first = check(description("step decay per epoch"), loaded("schedules", plant=bug)["StepDecay"],
                  attribution=False).first_mismatch
    assert "the per-epoch schedule one epoch early" in first.diagnosis, first.diagnosis


def test_every_example_and_description_of_the_page_is_run():
    """No worked example on the page that no test runs (the six kinds' tests between them)."""
    from test_layouts import CASES as LAYOUT, examples
    from test_own_loop import CASES as OWN
    run = {c[0] for c in CASES} | {"reported loss"} | {n for c in LAYOUT for n in c[0]} | {c[0] for c in OWN}
    assert set(examples()) == run
    assert set(declared()) == {c[2] for c in CASES}
