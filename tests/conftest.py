import copy
from pathlib import Path

import pytest
import torch

# The tests' tensors are tiny: torch's intra-op thread pool only adds contention. On a loaded
# 2-core machine one backward of a 16x16 layer took 40 ms with 2 threads and 0.4 ms with 1.
torch.set_num_threads(1)

SPECS = Path(__file__).resolve().parent.parent / "torch_ref" / "specs"

# Not rewritten for assertions: the packages pytest marks because they hold a pytest plugin (this
# project's fixture lockstep_check, hypothesis's). Rewriting parses and recompiles each module at
# every run where no bytecode is cached (a clean clone, PYTHONDONTWRITEBYTECODE): about 180
# modules, about 1 s of the collection's 6 s on one core, for their own asserts' messages alone;
# the tests' asserts are rewritten as before.
NOT_REWRITTEN = {"torch_ref", "manual", "hypothesis", "_hypothesis_globals", "_hypothesis_ftz_detector"}


def pytest_configure(config):
    """Take NOT_REWRITTEN off the assertion rewriter's list, before the test modules import them
    (this file imports none of them at its top for that reason). pytest keeps the list in a
    private attribute: where it is not there, nothing changes but the time."""
    hook = getattr(config.pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.difference_update(NOT_REWRITTEN)
        getattr(hook, "_marked_for_rewrite_cache", {}).clear()


@pytest.fixture(scope="session")
def worked_report():
    """torch_ref.example.report(), computed once: the 10000 iterations and the errata attributions
    take seconds, and several tests read the same report."""
    from torch_ref import example
    return example.report()


@pytest.fixture(scope="session")
def worked_fd_run(worked_report):
    """`backprop-check run worked_example --fd` (all 10000 iterations, finite differences on the
    first 3): the run the worked example's report trains both sides with, computed once.
    tests/test_worked_example.py asserts on it; the README shows what the command prints of it."""
    return worked_report["lockstep"]


@pytest.fixture(scope="session")
def ranks_page(tmp_path_factory):
    """(page, JSON report) of a data-parallel run with a zoo mistake: each rank's half-sse loss as
    written (not multiplied by the world size), caught at iteration 0: one launch of 2 ranks, for
    tests/test_html.py and tests/test_html_browser.py."""
    from torch_ref.cli.main import main
    d = tmp_path_factory.mktemp("ranks")
    assert main(["run", "worked_example_batch6", "--ranks", "2", "--steps", "3", "--ddp-as-written", "--quiet",
                 "--html", str(d / "p.html"), "--report", str(d / "p.json")]) == 1
    return d / "p.html", d / "p.json"


@pytest.fixture
def worked():
    """The worked example's parsed description (a fresh copy per test)."""
    from torch_ref.description import spec
    return spec.load(SPECS / "worked_example.toml")


def make_desc(sizes, activation, loss="mse", bias="per-neuron", batch_size=4, n=12, steps=30,
              dtype="float64", lr=0.1, seed=0):
    """A parsed description with seeded weights and random data."""
    from torch_ref.description import spec
    return spec.parse({
        "network": {"sizes": sizes, "activation": activation, "bias": bias, "loss": loss},
        "init": {"seed": seed},
        "optimizer": {"name": "sgd", "lr": lr},
        "data": {"random": {"n": n, "seed": seed + 1}, "batch_size": batch_size},
        "run": {"steps": steps, "dtype": dtype},
    })


def raw_worked():
    import tomllib
    return tomllib.loads((SPECS / "worked_example.toml").read_text())


@pytest.fixture
def raw():
    """The worked example as a raw (unparsed) dict, to be spoiled by a test."""
    return copy.deepcopy(raw_worked())


