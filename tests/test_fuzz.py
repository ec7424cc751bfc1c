"""Fuzzing the description grammar: whatever the file says, the command ends in 0, 1 or 2, and a 2
is exactly one line on stderr with no traceback.

Hypothesis builds descriptions from the grammar of torch_ref/description/spec.py (section and field names,
activation, loss, optimizer, schedule and init names read from its tables; small sizes, so a valid
one runs in milliseconds), then spoils most of them (1 or 2 times): a field replaced by a value of the wrong type,
a huge or non-finite number, a string with control characters, a deeply nested list; a section or
field deleted; an unknown key with control characters added. Each description is written as TOML
(a small emitter below: tomllib has no writer) and as JSON, and run in-process:

    torch_ref.cli.main.main(["run", path, "--steps", "2", "--quiet"])

An exception escaping main (a traceback) fails the test, as does any other exit code.

Profiles (HYPOTHESIS_PROFILE, as tests/test_properties.py): "ci" (the default: a few dozen
derandomized examples, no example database, a few seconds) and "long", by hand:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py
"""
import contextlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from torch_ref.cli import main as cli
from torch_ref.description import spec

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
FUZZ = settings(max_examples=2000 if LONG else 60, deadline=None, database=None, derandomize=not LONG,
                print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- writing TOML ----------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def toml_key(k):
    return k if _BARE.match(k) else json.dumps(k)  # a JSON string is a TOML basic string


def toml_value(v):
    """An inline TOML value (no None: the grammar never makes one)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(e) for e in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(e)}" for k, e in v.items()) + "}"


def to_toml(desc):
    """Top-level non-table values first (TOML wants them before any [table]), then one [table] per
    section with its fields as inline values."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in desc.items() if not isinstance(v, dict)]
    for k, v in desc.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_key(k)}]")
            lines += [f"{toml_key(f)} = {toml_value(e)}" for f, e in v.items()]
    return "\n".join(lines) + "\n"


# --- the grammar ---------------------------------------------------------------------------------

small_float = st.floats(0.05, 1.0)  # within every argument's valid range


@st.composite
def named(draw, table):
    """An activation or loss: a name, or a table with the name and some of its arguments."""
    name = draw(st.sampled_from(sorted(table)))
    args = table[name]
    if not args or draw(st.booleans()):
        return name
    chosen = draw(st.lists(st.sampled_from(sorted(args)), unique=True, max_size=len(args)))
    return {"name": name, **{a: args[a] if isinstance(args[a], str) else draw(small_float) for a in chosen}}


@st.composite
def descriptions(draw):
    """A description from the grammar, made to fit together (bce after a sigmoid, a toy set's 2
    inputs, an image set's C·H·W inputs and 3 classes) so that most run; some are still refused (a class loss with one output, ...), which is
    fine: the property holds either way."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=2, max_size=4))
    layers = len(sizes) - 1
    activation = draw(st.one_of(named(spec.ACTIVATION_ARGS),
                                st.lists(named(spec.ACTIVATION_ARGS), min_size=layers, max_size=layers)))
    loss = draw(named(spec.LOSS_ARGS))
    loss_name = loss if isinstance(loss, str) else loss["name"]
    if loss_name == "bce":
        activation = "sigmoid"
    desc = {"network": {"sizes": sizes, "activation": activation, "loss": loss,
                        "bias": draw(st.sampled_from(spec.BIASES))}}
    init = {"seed": draw(st.integers(0, 5))}
    if draw(st.booleans()):
        init["scheme"] = draw(st.sampled_from(sorted(spec.INIT_SCHEMES) + sorted(spec.INIT_ALIASES)))
    desc["init"] = init
    optimizer = draw(st.sampled_from(sorted(spec.OPTIMIZERS)))
    desc["optimizer"] = {"name": optimizer, "lr": draw(st.floats(1e-4, 0.1))}
    kind = draw(st.sampled_from(["random", "toy", "images"]))
    if kind == "random":
        desc["data"] = {"random": {"n": draw(st.integers(1, 6)), "seed": draw(st.integers(0, 5))}}
    elif kind == "images":
        name, size = draw(st.sampled_from(["bars", "shapes"])), draw(st.integers(5, 6))
        channels = draw(st.integers(1, 2))
        sizes[0], sizes[-1] = channels * size * size, 3  # flattened images, three classes
        desc["data"] = {"images": {"name": name, "n": draw(st.integers(1, 8)), "size": size,
                                   "channels": channels, "noise": draw(st.floats(0.0, 0.5))}}
    else:
        toy = draw(st.sampled_from(spec.TOY_SETS))
        if toy == "linear" and loss_name in ("nll", "cross_entropy", "bce", "bce_with_logits"):
            toy = "xor"  # linear is a regression
        if toy != "linear":
            sizes[0] = 2  # the classification sets have 2 inputs
        desc["data"] = {"toy": {"name": toy, "n": draw(st.integers(1, 8))}}
    desc["data"]["batch_size"] = draw(st.integers(1, 4))
    desc["run"] = {"steps": draw(st.integers(1, 3)), "dtype": draw(st.sampled_from(spec.DTYPES))}
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(spec.SCHEDULERS)))
        sched = {"name": name}
        for arg in spec.SCHEDULERS[name]:
            sched[arg] = draw(st.integers(1, 4)) if arg in spec.INTEGER_ARGS else draw(st.floats(0.1, 1.0))
        desc["scheduler"] = sched
    if draw(st.booleans()):
        desc["clip"] = {"max_norm": draw(small_float)} if draw(st.booleans()) else {"clip_value": draw(small_float)}
    return desc


NASTY_TEXT = st.text(st.sampled_from(list("ab_ \n\r\t\x1b[31m\x00\x7f\u2028é")), max_size=8)
BAD_VALUES = st.one_of(
    st.sampled_from([10 ** 400, -10 ** 400, 2 ** 63, 2 ** 64, 10 ** 12, -1, 0,
                     1e308, -1e308, 1e39, 5e-324, math.inf, -math.inf, math.nan, True, "", "inf"]),
    NASTY_TEXT,
    st.lists(st.integers(-2, 3), max_size=3),
    st.dictionaries(NASTY_TEXT, st.integers(0, 3), max_size=2),
    st.integers(1, 200).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


def paths(tree, prefix=()):
    """Every path (a tuple of keys and indices) to a value below the top of `tree`."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from paths(v, prefix + (k,))


@st.composite
def spoiled(draw):
    """A description, and then 0 to 2 spoilings: a value replaced, a key deleted, a key added."""
    desc = draw(descriptions())
    for _ in range(draw(st.sampled_from([1, 2, 0]))):  # mostly spoiled, some left valid
        where = draw(st.sampled_from([()] + list(paths(desc))))
        parent = desc
        for k in where[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        target = parent[where[-1]] if where else desc
        if action == "add" and isinstance(target, dict):
            target[draw(NASTY_TEXT.filter(bool))] = draw(BAD_VALUES)
        elif action == "delete" and where and isinstance(parent, dict):
            del parent[where[-1]]
        elif where:
            parent[where[-1]] = draw(BAD_VALUES)
    return desc


def run_command(path):
    """cli.main in-process, returning (exit code, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["run", str(path), "--steps", "2", "--quiet"])
    return code, err.getvalue()


_KNOWN = {"network": {"sizes": [2, 2], "activation": "tanh", "loss": "mse"}, "init": {"seed": 0},
          "optimizer": {"name": "sgd", "lr": 0.1}, "data": {"random": {"n": 2}}}


@FUZZ
@given(spoiled())
@example({**_KNOWN, "init": {"seed": 0, "scheme": ["xavier_uniform"]}})  # tracebacks found by the long profile
@example({**_KNOWN, "optimizer": {"name": "sgd", "lr": 10 ** 400}})
@example({**_KNOWN, "network": {"sizes": [2, 10 ** 400], "activation": "tanh", "loss": "mse"}})
def test_any_description_ends_in_0_1_or_one_line_2(desc):
    with tempfile.TemporaryDirectory() as d:
        for name, text in (("spec.toml", to_toml(desc)), ("spec.json", json.dumps(desc))):
            path = Path(d) / name
            path.write_text(text, encoding="utf-8")
            code, err = run_command(path)
            assert code in (0, 1, 2), (name, code, err)
            if code == 2:
                assert "Traceback" not in err, err
                assert err.endswith("\n") and err.count("\n") == 1, (name, err)


def test_the_toml_writer_round_trips():
    """The emitter's output reads back as the same tree (else the fuzz test would test the emitter)."""
    import tomllib
    desc = {"top": [1, "x"], "network": {"a.b": "q\n\x1b", "sizes": [[1], {"k": math.inf}], "t": True},
            "empty": {}}
    assert tomllib.loads(to_toml(desc)) == desc
