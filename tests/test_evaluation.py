"""The evaluation pass ([run] eval_every = k, torch_ref/lockstep/evaluation.py): every k iterations
both sides run the held-out batch in eval mode (running statistics, no dropout) and the outputs are
compared as stage "eval"; a mistake that only eval mode shows is caught there, at the first pass."""
import tomllib

import numpy as np
import pytest

import manual.data
import manual.trainer
from manual.batchnorm import BatchNorm1d
from manual.dropout import Dropout
from torch_ref.cli import main as cli
from torch_ref.description import spec
from torch_ref.description.files import bundled_path
from torch_ref.errors import SpecError
from torch_ref.lockstep.run import lockstep

from conftest import SPECS


def raw_spec(name, run=None, data=None):
    """A shipped description as raw TOML with [run] and [data] fields added."""
    raw = tomllib.loads(bundled_path(name).read_text())
    raw.setdefault("run", {}).update(run or {})
    raw["data"].update(data or {})
    return raw


def described(name, steps=6, eval_every=3, **data):
    return spec.parse(raw_spec(name, {"steps": steps, "eval_every": eval_every}, data))


# --- planted mistakes that only eval mode shows ----------------------------------------------

class BatchStatsInEval(BatchNorm1d):
    """Normalises with the batch's statistics in eval mode too (running statistics ignored)."""

    def forward(self, x):
        if self.training:
            return super().forward(x)
        kept, self.running_mean = self.running_mean, None  # (no running mean: batch statistics)
        try:
            return super().forward(x)
        finally:
            self.running_mean = kept


class DropsInEval(Dropout):
    """Applies its (last handed) mask in eval mode too."""

    def forward(self, x):
        was, self.training = self.training, True
        try:
            return super().forward(x)
        finally:
            self.training = was


@pytest.mark.parametrize("name,replace", [
    ("batchnorm_mlp", {BatchNorm1d: BatchStatsInEval}),
    ("dropout", {Dropout: DropsInEval}),
])
@pytest.mark.parametrize("every", [1, 3])
def test_a_mistake_of_eval_mode_is_caught_at_the_first_evaluation(name, replace, every):
    desc = described(name, eval_every=every)
    result = lockstep(desc, impl=manual.trainer.Trainer(desc, replace))
    first = result.first_mismatch
    assert not result.ok and (first.iteration, first.stage, first.name) == (every - 1, "eval", "output"), result.summary()
    assert {"forward", "output", "loss", "grad", "param"} <= set(first.passed_before)
    plain = spec.parse(raw_spec(name, {"steps": 6}))  # the training stages alone cannot see it
    assert lockstep(plain, impl=manual.trainer.Trainer(plain, replace)).ok


@pytest.mark.parametrize("name", ["lenet", "batchnorm_mlp", "residual", "dropout"])
def test_a_shipped_layer_list_passes_with_the_evaluation_pass(name):
    result = lockstep(described(name))
    assert result.ok and "eval" in result.stats and result.stats["eval"]["worst_tensor"] == "output", result.summary()
    assert "eval" not in result.not_reported + result.not_reached


# --- what the pass is: when, on what, in which mode, changing nothing -------------------------

class Recording(manual.trainer.Trainer):
    """The manual engine as a plug-in that records its eval calls: iteration, batch, modes."""

    def train_step(self, x, y, **kw):
        self.it = getattr(self, "it", -1) + 1
        return super().train_step(x, y, **kw)

    def eval(self, x):
        self.calls = getattr(self, "calls", [])
        out = super().eval(x)
        self.calls.append((self.it, x.copy(), self.model.training))
        return out


def test_the_pass_runs_after_every_kth_iteration_on_the_held_out_samples_and_returns_to_training():
    desc = described("batchnorm_mlp", steps=7, eval_every=3, holdout=6)
    impl = Recording(desc)
    assert lockstep(desc, impl=impl).ok
    assert [it for it, _, _ in impl.calls] == [2, 5]
    x, _ = manual.data.dataset(desc)
    for _, batch, training in impl.calls:
        np.testing.assert_array_equal(batch, x[-6:])  # the last 6 samples
        assert training  # back in training mode afterwards


def test_the_held_out_samples_are_never_trained_on_and_the_default_is_the_first_batch():
    desc = described("batchnorm_mlp", holdout=6)
    x, y = manual.data.dataset(desc)
    train, _ = manual.data.training_set(desc)
    assert len(train) == len(x) - 6
    batches = manual.data.batches(desc)
    seen = np.concatenate([next(batches)[0] for _ in range(len(train) // desc["data"]["batch_size"] * 2)])
    assert not any((seen == row).all(axis=1).any() for row in x[-6:])
    hx, hy = manual.data.holdout_batch(desc)
    np.testing.assert_array_equal(hx, x[-6:])
    np.testing.assert_array_equal(hy, y[-6:])
    plain = described("batchnorm_mlp")
    px, _ = manual.data.holdout_batch(plain)
    np.testing.assert_array_equal(px, manual.data.dataset(plain)[0][:plain["data"]["batch_size"]])


def test_the_pass_changes_no_running_statistic():
    """The manual engine's states after a run with an evaluation after every iteration are those
    of a run without (an eval forward that updated the buffers would change them)."""
    with_eval, without = (manual.trainer.build(described("batchnorm_mlp", eval_every=1)) for _ in range(2))
    batches = manual.data.batches(described("batchnorm_mlp"))
    hx, _ = manual.data.holdout_batch(described("batchnorm_mlp"))
    for _ in range(3):
        x, y = next(batches)
        a, b = with_eval.train_step(x, y), without.train_step(x, y)
        before = with_eval.state_dict()
        with_eval.eval(hx)
        for name, value in with_eval.state_dict().items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
        assert a["loss"] == b["loss"]


# --- not reported, skipped, refused -----------------------------------------------------------

class NoEval:
    """A plug-in without eval(x), or with torch.nn.Module's eval() that takes no argument."""

    def __init__(self, desc):
        self.inner = manual.trainer.build(desc)

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def train_step(self, x, y, **kw):
        return self.inner.train_step(x, y, **kw)


class ModuleLikeEval(NoEval):
    def eval(self):
        return self


@pytest.mark.parametrize("cls", [NoEval, ModuleLikeEval])
def test_a_plugin_without_eval_x_leaves_the_stage_not_reported(cls):
    desc = described("dropout")
    result = lockstep(desc, impl=cls(desc))
    assert result.ok and result.not_reported == ["eval"] and "eval" not in result.stats
    assert "eval    not reported" in result.summary()


def test_skip_stage_eval_and_a_run_too_short_to_reach_the_pass():
    assert "eval" not in lockstep(described("dropout"), skip_stages=["eval"]).stats
    short = lockstep(described("dropout", steps=2, eval_every=3))
    assert short.ok and short.not_reached == ["eval"]


def test_the_mlp_form_is_unaffected():
    result = lockstep(spec.load(SPECS / "three_layer_minibatch.toml"))
    assert "eval" not in set(result.stats) | set(result.not_reported) | set(result.not_reached)


@pytest.mark.parametrize("edit,field", [
    (lambda r: r["run"].update(eval_every=0), "run.eval_every"),
    (lambda r: r["run"].update(eval_every=1.5), "run.eval_every"),
    (lambda r: r["run"].update(eval_every=True), "run.eval_every"),
    (lambda r: r["run"].update(eval_every=2) or r["data"].update(holdout=0), "data.holdout"),
    (lambda r: r["run"].update(eval_every=2) or r["data"].update(holdout=40), "data.holdout"),
    (lambda r: r["run"].update(eval_every=2) or r["data"].update(holdout="4"), "data.holdout"),
    (lambda r: r["data"].update(holdout=4), "data.holdout"),  # without eval_every
    (lambda r: r["run"].update(eval_every=2) or r["data"].update(holdout=32, drop_last=True), "data.drop_last"),
])
def test_bad_evaluation_fields_are_refused_naming_the_field(edit, field):
    raw = raw_spec("batchnorm_mlp")
    edit(raw)
    with pytest.raises(SpecError) as e:
        spec.parse(raw)
    assert e.value.field == field


def test_eval_every_on_the_mlp_form_and_in_shadow_mode_exit_2(tmp_path, capsys):
    mlp = (SPECS / "three_layer_minibatch.toml").read_text().replace("[run]", "[run]\neval_every = 2", 1)
    (tmp_path / "mlp.toml").write_text(mlp)
    assert cli.main(["run", str(tmp_path / "mlp.toml")]) == 2
    assert "run.eval_every" in capsys.readouterr().err
    layers = bundled_path("batchnorm_mlp").read_text().replace("[run]", "[run]\neval_every = 2", 1)
    (tmp_path / "bn.toml").write_text(layers)
    assert cli.main(["run", str(tmp_path / "bn.toml"), "--dtype", "float32", "--mode", "shadow", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "run.eval_every" in err and len(err.strip().splitlines()) == 1


def test_a_reports_history_has_the_pass_at_its_iterations_only():
    from torch_ref.reports import per_stage
    result = lockstep(described("batchnorm_mlp", steps=6, eval_every=3), record=True)
    evals = per_stage(result.history)["eval"]
    assert evals["tensors"] == ["output"]
    assert [i for i, v in enumerate(evals["max_abs_err"]) if not np.isnan(v)] == [2, 5]
    assert not np.isnan(per_stage(result.history)["param"]["max_abs_err"]).any()
