"""The README and docs/ are held to the code: every output shown is what its command prints now
(scripts/docs.py --check), every code block parses or runs, every command shown is run by a test
(the table below says which), every flag of a synopsis exists, and the scope line lists exactly
the registered names."""
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from torch_ref.cli import main as cli
from torch_ref.description import names, spec
from torch_ref import testing

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def text(page):
    return page.read_text(encoding="utf-8")


def fenced(page, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text(page), re.S)


def test_the_readme_is_a_front_page():
    assert len(README.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)\)", README):
        assert (ROOT / link).is_file(), link
    for page in PAGES[1:]:
        for link in re.findall(r"\]\(([^)#:]+\.md)\)", text(page)):
            assert (page.parent / link).is_file(), (page.name, link)


def test_the_readme_shows_ten_lines_that_run():
    (block,) = fenced(ROOT / "README.md", "python")
    assert block in (ROOT / "tests" / "test_readme_quickstart.py").read_text(encoding="utf-8")
    assert len(block.strip().splitlines()) <= 12


def test_the_plugin_page_shows_the_complete_example_verbatim():
    example = (ROOT / "tests" / "test_example_user_test.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in text(ROOT / "docs" / "plugins.md")


def _docs_script():
    s = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts" / "docs.py")
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module


def test_every_output_shown_is_what_its_command_prints(worked_report, worked_fd_run, monkeypatch, capsys):
    from torch_ref import api, example
    from torch_ref.lockstep.finite_differences import FD_STEPS
    monkeypatch.setattr(example, "report", lambda: worked_report)  # computed once for the session
    check = api.check

    def computed_once(desc, impl=None, **kwargs):  # `run worked_example --fd`: the session's run
        # (attribution, which the command asks for, acts on a mismatch only: on a passing run it
        # changes nothing, and a failing one is run again here)
        asked = {k: v for k, v in kwargs.items() if v not in (None, (), False) and k not in ("progress", "attribution")}
        if (desc, impl, asked) == ("worked_example", None, {"mode": "free", "fd_steps": FD_STEPS}) and worked_fd_run.ok:
            return worked_fd_run
        return check(desc, impl, **kwargs)

    monkeypatch.setattr(api, "check", computed_once)
    assert _docs_script().main(["--check"]) == 0, capsys.readouterr().out


def _base(layers=2):
    """A small description with `layers` layers, seeded, on random data: what a fragment completes."""
    return {"network": {"sizes": [4] * layers + [3], "activation": "tanh", "loss": "mse"},
            "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
            "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4}}


@pytest.mark.parametrize("page, block", [(p.name, b) for p in PAGES for b in fenced(p, "toml")])
def test_every_toml_block_is_a_valid_description_or_part_of_one(page, block):
    raw = tomllib.loads(block)
    if "network" not in raw:  # a fragment: whole sections, or keys of [network], completed
        activation = raw.get("activation")
        base = _base(len(activation) if isinstance(activation, list) else 2)
        if set(raw) <= set(spec.SECTIONS):
            base.update(raw)
            if "batch_size" in raw.get("data", {}) and set(raw["data"]) == {"batch_size"}:
                base["data"] = {**_base()["data"], **raw["data"]}
        else:
            base["network"].update(raw)
        if "toy" in base["data"]:  # the classification sets have 2 inputs and one output
            base["network"]["sizes"] = [2, 4, 1]
        raw = base
    spec.parse(raw)


# Every command a page shows as a command line, and what runs it. "here": this module runs it
# in-process (scripts/docs.py runs those of the output blocks too); otherwise the test that does.
COMMANDS = {
    "pip install torch==2.13.0": "scripts/setup.sh, run by CI (.ci/run)",
    "pip install /path/to/backprop-check": "tests/test_conventions.py (slow: installs the wheel elsewhere)",
    "bash scripts/setup.sh && .venv/bin/backprop-check example": "here (the command) and CI (the set-up)",
    "bash scripts/setup.sh && .venv/bin/python -m pytest": "CI (.ci/run)",
    "backprop-check run three_layer_minibatch --fd --steps 10": "scripts/docs.py (output block)",
    "backprop-check run worked_example --impl scripts/seed_port.py:build --steps 2000":
        "scripts/docs.py (output block)",
    "python scripts/bench.py": "by hand (minutes); tests/test_bench.py checks its counts",
    "python scripts/bench.py --json": "by hand; tests/test_bench.py",
    "python scripts/bench.py --quick": "by hand; tests/test_bench.py",
    "python scripts/bench.py --case 6": "by hand; tests/test_bench.py (the choice of cases, case 6's count)",
    "python scripts/bench.py --docs": "by hand (minutes); tests/test_bench.py::test_the_docs_quote_a_full_run",
    'backprop-check run clients/momentum.toml --impl "exec:./mlp"': "tests/test_exec.py (the C client)",
    'backprop-check run worked_example --impl "exec:python3 -m torch_ref.implementation.client manual.trainer:build"':
        "tests/test_exec.py (the Python client, with the suite's interpreter)",
    "backprop-check export clients/momentum.toml trace": "tests/test_traces.py::test_the_docs_round_trip_runs",
    "python clients/trace_mlp.py trace --every 5": "tests/test_traces.py::test_the_docs_round_trip_runs "
                                                   "(the outside program, by its main())",
    "backprop-check verify clients/momentum.toml trace": "tests/test_traces.py::test_the_docs_round_trip_runs",
    "HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py":
        "by hand (the long profile); the suite runs the default profile",
    "torchrun --nnodes M --nproc-per-node R --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\":
        "tests/test_distributed.py::test_torchrun_two_nodes_on_loopback",
}
SYNOPSIS = re.compile(r"\b(SPEC|TARGET|FILE|SECONDS)\b|\[--")


def command_lines():
    found = {}
    for page in PAGES:
        for line in text(page).splitlines():
            m = re.match(r"    ((?:[A-Z_]+=\S+ )?(?:backprop-check|python|bash|pip|torchrun) .*?)\s*(?:#.*)?$", line)
            if m:
                found.setdefault(m.group(1), page.name)
    return found


def test_every_command_shown_is_run_by_a_test():
    shown = {c for c in command_lines() if not SYNOPSIS.search(c)}
    assert shown == set(COMMANDS), (sorted(shown - set(COMMANDS)), sorted(set(COMMANDS) - shown))


def test_the_readme_example_command_runs(worked_report, monkeypatch, capsys):
    from torch_ref import example
    monkeypatch.setattr(example, "report", lambda: worked_report)
    assert cli.main(["example"]) == 0
    assert "every computed value confirmed by autograd: yes" in capsys.readouterr().out


def _options():
    parser = cli._parser()
    options = set()
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            for a in parser._subparsers._group_actions[0].choices[sub]._actions:
                options.update(a.option_strings)
    return options


@pytest.mark.parametrize("line", sorted(c for c in command_lines() if SYNOPSIS.search(c)))
def test_every_flag_of_a_synopsis_exists(line):
    flags = set(re.findall(r"--[a-z][a-z-]*", line))
    assert flags <= _options(), flags - _options()
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
    assert words[0] == "backprop-check" and words[1] in ("run", "zoo", "example", "export", "verify")


def test_the_scope_lists_exactly_the_registered_names():
    scope = README[README.index("## What it covers"):README.index("## Read on")]

    def listed(label):
        line = re.search(rf"\*\*{label}\*\*: (.*?)\.\n- ", scope, re.S).group(1)
        return set(re.findall(r"[a-z_0-9-]+", line.replace(" and ", ", ").split("(")[0])) | set(
            re.findall(r"^([a-z_0-9-]+)", line))

    assert {"sigmoid", "tanh", "relu", "identity", "leaky_relu", "elu", "gelu", "silu", "softplus",
            "softmax", "log_softmax"} == set(names.ACTIVATIONS)
    for name in names.ACTIVATIONS:
        assert name in listed("Activations")
    for name in names.LOSSES:
        assert name in listed("Losses")
    for name in spec.OPTIMIZERS:
        assert name in scope
    for name in spec.TOY_SETS:
        assert name in scope


def test_the_tolerance_table_is_the_code_s():
    page = text(ROOT / "docs" / "lockstep.md")
    for dtype in ("float64", "float32"):
        rtol, atol = testing.tolerance(dtype)
        short = lambda x: f"{x:.0e}".replace("e-0", "e-")  # 1e-4, as the page writes it
        assert f"| {dtype} | {short(rtol)} | {short(atol)} |" in page
