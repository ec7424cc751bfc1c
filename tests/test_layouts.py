"""Declared conventions (torch_ref/implementation/conventions.py): the worked examples of
docs/conventions.md pass as written and fail where a planted bug is, at the right iteration, stage
and tensor; a layout that cannot apply is bad input naming the key."""
import re
from pathlib import Path

import numpy as np
import pytest

from torch_ref import check
from torch_ref.errors import ImplError
from torch_ref.implementation import Conventions

DOC = Path(__file__).resolve().parent.parent / "docs" / "conventions.md"


def examples():
    """{name: code} of the python blocks of docs/conventions.md, named by their `# example:` line."""
    found = re.findall(r"```python\n# example: ([^\n]+)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return dict(found)


def loaded(*names, plant=None):
    """The namespace of the named examples run in order; `plant` = (text, replacement) edits the code."""
    code = "\n".join(examples()[n] for n in names)
    if plant is not None:
        assert code.count(plant[0]) == 1, plant[0]
        code = code.replace(plant[0], plant[1])
    ns = {}
    exec(compile(code, str(DOC), "exec"), ns)
    return ns


def description(optimizer=None, sizes=(3, 4, 2), activation=("tanh", "identity"), steps=6):
    return {"network": {"sizes": list(sizes), "activation": list(activation), "bias": "per-neuron", "loss": "mse"},
            "init": {"seed": 0}, "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
            "data": {"random": {"n": 12, "seed": 1}, "batch_size": 4}, "run": {"steps": steps, "dtype": "float64"}}


MOMENTUM = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
CASES = [  # (examples, factory, description, planted bug, where it must fail: iteration, stage, tensor)
    (("layout", "layout adapter"), "Adapter", description(),
     ('d1 = (d2 @ p["W2"].T) * (1.0 - h ** 2)', 'd1 = d2 @ p["W2"].T'), (0, "delta", "layers.0")),
    (("layout", "layout adapter"), "Adapter", description(),
     ('"b1": d1.sum(0, keepdims=True)', '"b1": 2 * d1.sum(0, keepdims=True)'), (0, "grad", "layers.0.bias")),
    (("momentum",), "MomentumNet", description(MOMENTUM, sizes=(3, 2), activation=("identity",)),
     ("self.mu * self.v[k]", "0.5 * self.v[k]"), (1, "optim", "layers.0.weight.momentum_buffer")),
]


@pytest.mark.parametrize("names,factory,desc,bug,where", CASES, ids=[c[0][0] + ":" + c[3][1][:20] for c in CASES])
def test_a_declared_example_passes_and_its_planted_bug_fails_where_it_is(names, factory, desc, bug, where):
    result = check(desc, loaded(*names)[factory])
    assert result.ok and result.first_mismatch is None, result.summary()
    assert "param" in result.stats and "grad" in result.stats
    bad = check(desc, loaded(*names, plant=bug)[factory])
    assert not bad.ok
    assert (bad.first_mismatch.iteration, bad.first_mismatch.stage, bad.first_mismatch.name) == where, bad.summary()


def test_the_layout_adapter_is_shorter_than_20_lines():
    lines = [line for line in examples()["layout adapter"].splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) < 20
    assert ".T" not in examples()["layout adapter"] and "reshape" not in examples()["layout adapter"]


def test_the_momentum_example_reports_no_step_and_torch_s_buffer():
    ns = loaded("momentum")
    result = check(description({"name": "sgd", "lr": 0.1, "momentum": 0.9}, sizes=(3, 2), activation=("identity",)),
                   ns["MomentumNet"])
    assert result.ok and "optim" in result.stats


BAD = [  # (a change to the layout example, what the one-line error names)
    (('"state_dict": self.net.params', '"state_dict": {**self.net.params, "W1": self.net.params["W1"].T}'),
     "state_dict['W1'] (layers.0.weight) with shape (4, 3); weight_layout 'in_out' expects (fan_in, fan_out) = (3, 4)"),
    (('"grads": self.net.grads', '"grads": {**self.net.grads, "b2": self.net.grads["b2"].ravel()}'),
     "grads['b2'] (layers.1.bias) with shape (2,); bias_shape 'row' expects (1, fan_out)"),
]


@pytest.mark.parametrize("plant,needle", BAD, ids=[b[1][:30] for b in BAD])
def test_a_convention_that_cannot_apply_is_one_line_naming_the_tensor(plant, needle):
    ns = loaded("layout", "layout adapter", plant=plant)
    with pytest.raises(ImplError) as e:
        check(description(), ns["Adapter"])
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_bad_layout_is_exit_2_from_the_command(tmp_path, capsys):
    from torch_ref.cli.main import main
    impl = tmp_path / "impl.py"
    impl.write_text(examples()["layout"] + examples()["layout adapter"].replace('bias_shape="row"', 'bias_shape="col"'))
    spec = tmp_path / "d.json"
    import json
    spec.write_text(json.dumps(description()))
    assert main(["run", str(spec), "--impl", f"{impl}:Adapter"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conventions.bias_shape" in err[0]


SCALES = [  # (declared scale, optimizer, torch's buffer, the factor the implementation's buffer holds)
    ("-lr", {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "momentum_buffer", -0.1),
    ("1-momentum", {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "momentum_buffer", 0.1),
    ({"exp_avg": "1-beta1"}, {"name": "adam", "lr": 0.1, "betas": [0.8, 0.99]}, "exp_avg", 0.2),
    ({"exp_avg": "1-beta1"}, {"name": "adam", "lr": 0.1, "betas": [0.8, 0.99]}, "exp_avg_sq", 1.0),
    (3.0, {"name": "sgd", "lr": 0.1}, "momentum_buffer", 3.0),
]


@pytest.mark.parametrize("scale,optimizer,buffer,factor", SCALES)
def test_the_optimizer_state_scale_is_read_from_the_description(scale, optimizer, buffer, factor):
    scales = Conventions(optimizer_state_scale=scale).scales(optimizer)
    assert scales.get(buffer, scales["*"]) == pytest.approx(factor)


@pytest.mark.parametrize("declared,needle", [
    ({"weight_layout": "in_out", "bias": "row"}, "conventions.bias: not a field"),
    ({"names": 3}, "conventions.names"),
    ({"optimizer_state_scale": "-momentum"}, "conventions.optimizer_state_scale"),
    ({"optimizer_state_scale": 0}, "non-zero number"),
])
def test_a_declaration_that_cannot_be_read_names_its_field(declared, needle):
    with pytest.raises(ImplError) as e:
        Conventions.of(declared).scales({"name": "sgd", "lr": 0.1})
    assert needle in str(e.value)


def test_a_dict_declaration_and_a_names_function_work_as_the_object():
    ns = loaded("layout", "layout adapter")

    class ByFunction(ns["Adapter"]):
        conventions = {"weight_layout": "in_out", "bias_shape": "row",
                       "names": lambda t: {"weight": "W", "bias": "b"}.get(t.split(".")[-1], "d")
                       + str(int(t.split(".")[1]) + 1)}
    assert check(description(), ByFunction).ok


def test_any_subset_of_deltas_is_compared_where_given():
    ns = loaded("layout", "layout adapter")

    class OneDelta(ns["Adapter"]):
        def train_step(self, x, y):
            r = super().train_step(x, y)
            return {**r, "deltas": {"d2": r["deltas"]["d2"]}}
    assert check(description(), OneDelta).ok

    class WrongDelta(OneDelta):
        def train_step(self, x, y):
            r = super().train_step(x, y)
            return {**r, "deltas": {"d2": 2 * r["deltas"]["d2"]}}
    bad = check(description(), WrongDelta)
    assert (bad.first_mismatch.stage, bad.first_mismatch.name) == ("delta", "layers.1")
