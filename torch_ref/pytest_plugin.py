"""pytest plugin: certify your own backprop in your own tests, with the fixture `lockstep_check`.

Installing backprop-check registers this module as a pytest plugin (the `pytest11` entry point
`backprop_check` in pyproject.toml): the fixture is there in every test, with no import and no
conftest.py. A ten-line test file:

    # test_my_backprop.py
    from mynet import MyNet   # load_state_dict(state); train_step(x, y) -> {"output", "loss", "grads", "state_dict"}

    def test_matches_autograd_at_every_iteration(lockstep_check):
        lockstep_check("worked_example", MyNet, steps=200)

    def test_gradients_agree_with_finite_differences(lockstep_check):
        lockstep_check("worked_example", MyNet, steps=3, fd_steps=2)

    def test_my_own_network(lockstep_check):
        lockstep_check("specs/my_net.toml", "mynet:MyNet", mode="resync")

`lockstep_check(desc, impl=None, **kwargs)` is `torch_ref.assert_lockstep` (torch_ref/api.py; the
same arguments: a description file, the name of a bundled one (`backprop-check specs`) or a dict;
an implementation as a class, a factory, an object or a TARGET string; steps, dtype, device, mode,
fd_steps, skip_stages, step_timeout, report/markdown/plot) and returns the `Result`. A mismatch
fails the test with the cross-check's report alone, no traceback into this package: iteration,
stage, tensor, worst index, both values, tolerance. A description that cannot be run, or an
implementation that cannot be loaded or breaks the contract, raises `SpecError` / `ImplError`
naming the field (an error of the test's set-up, as the command's exit code 2).

Nothing heavy is imported until the fixture is called: this module is loaded by every pytest run
in an environment where backprop-check is installed. Do not also name it in `pytest_plugins` (a
second registration of the same module is refused by pytest).
"""
import pytest


@pytest.fixture
def lockstep_check():
    """A callable: lockstep_check(desc, impl=None, **kwargs) -> Result; fails the test, showing the
    lockstep report, unless every compared value matched at every iteration (and, with fd_steps,
    the finite differences agree)."""
    return _lockstep_check


def _lockstep_check(desc, impl=None, **kwargs):
    """torch_ref.assert_lockstep, its AssertionError turned into pytest's failure with the report
    as the whole message."""
    __tracebackhide__ = True
    from .api import assert_lockstep
    try:
        return assert_lockstep(desc, impl, **kwargs)
    except AssertionError as mismatch:
        report = str(mismatch)
    pytest.fail(report, pytrace=False)  # outside the except: no "during handling" second copy
