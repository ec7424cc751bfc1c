"""Code whose loop is its own (torch_ref/implementation/own_loop.py): the three shapes of
docs/conventions.md pass as written, fail where a planted bug is (iteration, stage, tensor), and
report as "not reported" what the code does not expose."""
import pytest

from torch_ref import check
from torch_ref.errors import ImplError

from test_layouts import description, loaded

CASES = [  # (example, planted bug, where it must fail, stages not reported)
    ("batch method", ("self.b2 - self.lr * d2.sum(0)", "self.b2 + self.lr * d2.sum(0)"),
     (0, "param", "layers.1.bias"), ["delta", "grad"]),
    ("batch method", ("return np.tanh(X @ self.W1 + self.b1) @ self.W2 + self.b2", "return X @ self.W1 @ self.W2"),
     (0, "output", "output"), ["delta", "grad"]),
    ("layers", ("return dout * (1.0 - self.out ** 2)", "return dout"), (0, "delta", "layers.0"), []),
    ("layers", ("self.dW, self.db = self.x.T @ dout, dout.sum(0)", "self.dW, self.db = self.x.T @ dout, dout.mean(0)"),
     (0, "grad", "layers.1.bias"), []),
    ("loss function", ('"b1": dh.sum(0)', '"b1": dh.sum(0) * 0.5'), (0, "grad", "layers.0.bias"), ["delta"]),
]


@pytest.mark.parametrize("name,bug,where,unreported", CASES, ids=[f"{c[0]}:{c[2][1]}" for c in CASES])
def test_an_own_loop_example_passes_and_its_planted_bug_fails_where_it_is(name, bug, where, unreported):
    result = check(description(), loaded(name)["build"])
    assert result.ok, result.summary()
    assert sorted(result.not_reported) == unreported and "param" in result.stats
    bad = check(description(), loaded(name, plant=bug)["build"])
    assert not bad.ok
    m = bad.first_mismatch
    assert (m.iteration, m.stage, m.name) == where, bad.summary()


def test_what_a_batch_method_does_not_expose_is_not_reported_never_passed():
    ns = loaded("batch method")

    def build(desc):
        net = ns["Network"](desc["optimizer"]["lr"])
        net.train_batch = lambda X, Y, step=net.train_batch: (step(X, Y), None)[1]  # returns nothing
        return ns["from_batch_method"](net, net.train_batch, ["W1", "b1", "W2", "b2"],
                                       conventions=ns["build"](description()).conventions)
    result = check(description(), build)
    assert result.ok and sorted(result.not_reported) == ["delta", "grad", "loss", "output"]
    assert list(result.stats) == ["param"]


@pytest.mark.parametrize("name", ["layers", "loss function"])
@pytest.mark.parametrize("optimizer,needle", [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, "momentum = 0.9"),
    ({"name": "adam", "lr": 0.1}, "'adam'"),
    ({"name": "sgd", "lr": 0.1, "param_groups": [{"params": "*.weight", "weight_decay": 0.1}]}, "param_groups"),
])
def test_the_harness_s_own_sgd_refuses_another_optimizer(name, optimizer, needle):
    with pytest.raises(ImplError) as e:
        check(description(optimizer), loaded(name)["build"])
    assert needle in str(e.value) and "update=" in str(e.value) and "\n" not in str(e.value)


def test_the_code_s_own_update_replaces_the_harness_s():
    ns = loaded("loss function")

    def build(desc):
        model = ns["TwoLayerNet"]()
        v = {}

        def momentum(params, grads):  # torch's rule: m = μm + g, θ -= lr·m
            for k in params:
                v[k] = 0.9 * v.get(k, 0.0) + grads[k]
                params[k] = params[k] - 0.1 * v[k]
        return ns["from_loss_function"](model.loss, model.params, desc, update=momentum,
                                        conventions=ns["build"](description()).conventions)
    assert check(description({"name": "sgd", "lr": 0.1, "momentum": 0.9}), build).ok


def test_fd_refuses_code_whose_gradients_are_not_exposed(tmp_path, capsys):
    """--fd on a batch method (grads NOT_EXPOSED): one line, exit 2, no traceback; the API's ImplError."""
    import json
    from torch_ref.cli.main import main
    from test_layouts import examples
    with pytest.raises(ImplError) as e:
        check(description(), loaded("batch method")["build"], fd_steps=1)
    assert "NOT_EXPOSED" in str(e.value) and "\n" not in str(e.value)
    impl, spec = tmp_path / "impl.py", tmp_path / "d.json"
    impl.write_text(examples()["batch method"])
    spec.write_text(json.dumps(description()))
    assert main(["run", str(spec), "--impl", f"{impl}:build", "--fd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fd" in err[0] and "Traceback" not in err[0], err
