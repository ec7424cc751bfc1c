"""manual/ mirrors torch's API: a torch user's call means the same thing on both sides.

Linear(bias=True/False) and SharedBiasLinear against torch's layers (forward, backward, state-dict
layout), LinearLR against torch's over many steps, the stable functions against
torch.nn.functional, and every constructor's arguments against its torch counterpart's (names,
positions, defaults), so that a positional or keyword call cannot silently mean something else.
"""
import importlib
import inspect
import math
import pkgutil
import re
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import manual
import manual.activations
import manual.clip_grad
import manual.functional
import manual.init
import manual.losses
import manual.lr_scheduler
import manual.modules
import manual.optim
from manual.modules import Linear, Parameter, SharedBiasLinear
from torch_ref.twin.model import SharedBiasLinear as TorchSharedBiasLinear

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def load(layer, torch_layer):
    """Copy the torch layer's (random) state into the manual layer, by state-dict name."""
    params = dict(layer.named_parameters())
    for name, value in torch_layer.state_dict().items():
        params[name].data[...] = value.detach().numpy()


# (in, out, N, bias, dtype)
LINEAR_CASES = [(3, 4, 5, True, np.float64), (3, 4, 5, False, np.float64), (4, 4, 1, True, np.float64),
                (7, 2, 3, False, np.float64), (3, 4, 5, True, np.float32), (5, 1, 2, False, np.float32)]


@pytest.mark.parametrize("n_in,n_out,n,bias,dtype", LINEAR_CASES,
                         ids=[f"{i}-{o}-N{n}-bias={b}-{d.__name__}" for i, o, n, b, d in LINEAR_CASES])
def test_linear_matches_torch_linear(n_in, n_out, n, bias, dtype):
    """Linear(in, out, bias=...) is torch.nn.Linear(in, out, bias=...): the same state-dict names and
    shapes, the same trained parameters, and the same y, grad_W, grad_b and grad_x."""
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    torch.manual_seed(n_in * 10 + n_out)
    ref = nn.Linear(n_in, n_out, bias=bias, dtype=tdtype)
    layer = Linear(n_in, n_out, bias=bias, dtype=dtype)
    assert {k: v.shape for k, v in ref.state_dict().items()} == \
        {k: p.data.shape for k, p in layer.named_parameters()}
    assert len(layer.parameters()) == len(list(ref.parameters()))
    assert (layer.bias is None) == (ref.bias is None)
    load(layer, ref)

    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    grad_y = rng.standard_normal((n, n_out)).astype(dtype)
    y = layer(x)  # called as a torch module is
    grad_x = layer.backward(grad_y)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(grad_y))

    rtol = RTOL[dtype]
    assert y.shape == (n, n_out) and y.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=rtol, atol=rtol)
    if bias:
        assert layer.bias.grad.shape == (n_out,)
        np.testing.assert_allclose(layer.bias.grad, ref.bias.grad.numpy(), rtol=rtol, atol=rtol)


def test_shared_bias_linear_matches_the_twins():
    """SharedBiasLinear has the twin's state-dict layout (weight (out, in), a 0-d bias), the twin's
    trained parameters (the weight only), adds its one scalar to every neuron and never trains it."""
    torch.manual_seed(0)
    ref = TorchSharedBiasLinear(3, 2, dtype=torch.float64)
    nn.init.normal_(ref.weight)
    ref.bias.fill_(0.35)
    layer = SharedBiasLinear(3, 2)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {"weight": (2, 3), "bias": ()} == \
        {k: p.data.shape for k, p in layer.named_parameters()}
    assert layer.parameters() == [layer.weight] and len(list(ref.parameters())) == 1
    load(layer, ref)

    x = np.random.default_rng(1).standard_normal((4, 3))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.sum().backward()
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(np.ones((4, 2))), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-12)
    assert layer.bias.grad is None and not layer.bias.requires_grad


@pytest.mark.parametrize("bias", ["per-neuron", "shared-frozen", "none"])
def test_linear_refuses_a_bias_mode_string(bias):
    """The old API took a mode string: torch would read any non-empty string as bias=True."""
    with pytest.raises(TypeError, match="bool"):
        Linear(3, 4, bias=bias)


@pytest.mark.parametrize("mode,cls,bias_shape", [("per-neuron", Linear, (4,)), ("none", Linear, None),
                                                 ("shared-frozen", SharedBiasLinear, ())])
def test_mlp_maps_the_description_bias_onto_the_layers(mode, cls, bias_shape):
    layer = manual.modules.MLP([3, 4], ["tanh"], mode).layers[0]
    assert type(layer) is cls
    assert (None if layer.bias is None else layer.bias.data.shape) == bias_shape


def test_mlp_refuses_an_unknown_bias_mode():
    with pytest.raises(ValueError, match="bias mode"):
        manual.modules.MLP([3, 4], ["tanh"], "per-layer")


# (start_factor, end_factor, total_iters): rising, falling (end < start), to 0, one step, long
LINEAR_LR = [(1 / 3, 1.0, 5), (0.1, 1.0, 10), (0.5, 0.9, 7), (1.0, 0.25, 12), (0.8, 0.0, 6),
             (0.05, 1.0, 1), (0.3, 0.7, 50), (1.0, 1.0, 4)]


@pytest.mark.parametrize("start,end,total", LINEAR_LR, ids=[f"{s:.3g}-{e}-{t}" for s, e, t in LINEAR_LR])
def test_linear_lr_matches_torchs_over_many_steps(start, end, total):
    """LinearLR(start_factor, end_factor, total_iters) gives torch's rate at every step, through
    the ramp and long after it, for rising and falling factors."""
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.7)
    t_sched = torch.optim.lr_scheduler.LinearLR(t_opt, start_factor=start, end_factor=end, total_iters=total)
    m_opt = manual.optim.SGD([], lr=0.7)
    m_sched = manual.lr_scheduler.LinearLR(m_opt, start_factor=start, end_factor=end, total_iters=total)
    for t in range(3 * total + 20):
        theirs = t_opt.param_groups[0]["lr"]
        assert m_opt.lr == pytest.approx(theirs, rel=1e-13, abs=1e-15), t
        assert m_sched.get_last_lr() == [m_opt.lr]
        t_opt.step()
        t_sched.step()
        m_sched.step()
    assert m_opt.lr == pytest.approx(0.7 * end, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("args", [{}, {"warmup_steps": 10, "start_factor": 0.1}, {"warmup_steps": 1}])
def test_the_descriptions_warmup_is_linear_lr_ending_at_one(args):
    m_opt, w_opt = manual.optim.SGD([], lr=0.5), manual.optim.SGD([], lr=0.5)
    sched = manual.lr_scheduler.SCHEDULERS["warmup"](w_opt, **args)
    ref = manual.lr_scheduler.LinearLR(m_opt, start_factor=args.get("start_factor", 1 / 3), end_factor=1.0,
                                       total_iters=args.get("warmup_steps", 5))
    assert isinstance(sched, manual.lr_scheduler.LinearLR) and sched.end_factor == 1.0
    for _ in range(15):
        assert w_opt.lr == m_opt.lr
        sched.step()
        ref.step()


@pytest.mark.parametrize("start,end", [(0.0, 1.0), (1.5, 1.0), (0.5, -0.1), (0.5, 1.2)])
def test_linear_lr_refuses_the_factors_torch_refuses(start, end):
    with pytest.raises(ValueError):
        torch.optim.lr_scheduler.LinearLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), start, end)
    with pytest.raises(ValueError, match="factor"):
        manual.lr_scheduler.LinearLR(manual.optim.SGD([]), start, end)


# (manual function, torch function, arguments)
FUNCTIONAL = [
    (manual.functional.softplus, F.softplus, {}),
    (manual.functional.softplus, F.softplus, {"beta": 2.0, "threshold": 1.5}),
    (manual.functional.log_softmax, F.log_softmax, {"dim": 1}),
    (manual.functional.log_softmax, F.log_softmax, {"dim": 0}),
    (manual.functional.sigmoid, torch.sigmoid, {}),
]


@pytest.mark.parametrize("ours,theirs,kwargs", FUNCTIONAL, ids=lambda v: getattr(v, "__name__", str(v)))
def test_functional_matches_torchs(ours, theirs, kwargs):
    x = np.concatenate([np.random.default_rng(0).standard_normal((4, 5)) * 5, [[-1000, 1000, 0, 20, -20]]])
    np.testing.assert_allclose(ours(x, **kwargs), theirs(torch.tensor(x), **kwargs).numpy(), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_log_softmax_without_dim_takes_torchs_dimension(shape):
    """dim=None: torch's implicit dimension (0 for a vector and for 3 dimensions, else 1)."""
    x = np.random.default_rng(4).standard_normal(shape)
    with pytest.warns(UserWarning):  # torch warns of the implicit choice
        theirs = F.log_softmax(torch.tensor(x)).numpy()
    np.testing.assert_allclose(manual.functional.log_softmax(x), theirs, rtol=1e-13)


@pytest.mark.parametrize("cls,tcls", [(manual.activations.Softmax, nn.Softmax), (manual.activations.LogSoftmax, nn.LogSoftmax)])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_softmax_dim_is_torchs(cls, tcls, dim):
    """Softmax(dim) and LogSoftmax(dim) reduce over torch's dimension (None: torch's rule, 1 here)."""
    x = np.random.default_rng(2).standard_normal((3, 4))
    g = np.random.default_rng(3).standard_normal((3, 4))
    xt = torch.tensor(x, requires_grad=True)
    with pytest.warns(UserWarning) if dim is None else _no_warning():  # torch warns of the implicit dim
        yt = tcls(dim=dim)(xt)
    yt.backward(torch.tensor(g))
    m = cls(dim=dim)
    np.testing.assert_allclose(m(x), yt.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(m.backward(g), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_stable_formulas_are_written_once():
    """log-sum-exp and log(1 + exp) are defined in functional.py only: modules and losses import them."""
    import pathlib
    sources = {p.name: p.read_text() for p in pathlib.Path(manual.__file__).parent.glob("*.py")}
    for fragment in ("np.log1p(np.exp(", "np.log(np.exp("):
        assert [name for name, text in sources.items() if fragment in text] == ["functional.py"], fragment


def test_zero_grad_set_to_none_false_zeroes_in_place_as_torch():
    p, t = Parameter(np.zeros(3)), torch.zeros(3, requires_grad=True)
    p.accumulate(np.array([1.0, 2.0, 3.0]))
    t.grad = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32)
    held, t_held = p.grad, t.grad
    manual.optim.SGD([p]).zero_grad(set_to_none=False)
    torch.optim.SGD([t]).zero_grad(set_to_none=False)
    assert p.grad is held and held.tolist() == t_held.tolist() == [0.0, 0.0, 0.0]
    manual.optim.SGD([p]).zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("norm_type", [2.0, 1, "inf"])
def test_clip_grad_norm_takes_torchs_arguments(norm_type):
    """One Parameter or an iterable; norm_type also as "inf"; error_if_nonfinite raises as torch's."""
    g = np.array([3.0, -4.0, 12.0])
    p, t = Parameter(np.zeros(3)), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    p.grad, t.grad = g.copy(), torch.tensor(g)
    n = manual.clip_grad.clip_grad_norm_(p, max_norm=1.0, norm_type=norm_type)
    tn = nn.utils.clip_grad_norm_(t, max_norm=1.0, norm_type=norm_type)
    assert n == pytest.approx(float(tn), rel=1e-14)
    np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-14)
    p.grad, t.grad = np.array([np.inf, 1.0, 0.0]), torch.tensor([np.inf, 1.0, 0.0], dtype=torch.float64)
    with pytest.raises(RuntimeError):
        nn.utils.clip_grad_norm_(t, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        manual.clip_grad.clip_grad_norm_([p], 1.0, norm_type, error_if_nonfinite=True)
    assert p.grad[0] == np.inf  # nothing scaled


def _signature(fn):
    """inspect's signature, or for a torch builtin the one the first line of its docstring gives
    ("sigmoid(input, *, out=None) -> Tensor"); where it takes only (*args, **kwargs) and declares
    typed overloads (nn.RNN, nn.LSTM, nn.GRU's __init__), the first overload's."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        args = re.match(r"\w+\((.*?)\)", fn.__doc__.strip()).group(1)
        return inspect.signature(eval(f"lambda {args}: None"))
    rest = [p for p in sig.parameters.values() if p.name != "self"]
    overloads = typing.get_overloads(fn) if hasattr(fn, "__module__") else []
    if overloads and rest and all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in rest):
        return inspect.signature(overloads[0])
    return sig


def _arguments(fn):
    return [p for p in _signature(fn).parameters.values() if p.name not in ("self", "args", "kwargs")]


def _default(v):
    return list(v) if isinstance(v, tuple) else v


# (manual callable, torch callable): every argument of ours is torch's, at torch's position if
# positional, with torch's default
SIGNATURES = [
    (Linear, nn.Linear), (Parameter, nn.Parameter.__new__), (manual.activations.LeakyReLU, nn.LeakyReLU),
    (manual.activations.ELU, nn.ELU), (manual.activations.GELU, nn.GELU), (manual.activations.Softplus, nn.Softplus),
    (manual.activations.Softmax, nn.Softmax), (manual.activations.LogSoftmax, nn.LogSoftmax),
    (manual.activations.Sigmoid, nn.Sigmoid), (manual.activations.Tanh, nn.Tanh), (manual.activations.SiLU, nn.SiLU),
    (manual.activations.ReLU, nn.ReLU),
    (manual.losses.MSELoss, nn.MSELoss), (manual.losses.L1Loss, nn.L1Loss),
    (manual.losses.SmoothL1Loss, nn.SmoothL1Loss), (manual.losses.HuberLoss, nn.HuberLoss),
    (manual.losses.CrossEntropyLoss, nn.CrossEntropyLoss), (manual.losses.NLLLoss, nn.NLLLoss),
    (manual.losses.BCELoss, nn.BCELoss), (manual.losses.BCEWithLogitsLoss, nn.BCEWithLogitsLoss),
    (manual.optim.SGD, torch.optim.SGD), (manual.optim.Adam, torch.optim.Adam),
    (manual.optim.AdamW, torch.optim.AdamW), (manual.optim.RMSprop, torch.optim.RMSprop),
    (manual.optim.Adagrad, torch.optim.Adagrad), (manual.optim.Optimizer.zero_grad, torch.optim.Optimizer.zero_grad),
    (manual.modules.MLP.zero_grad, nn.Module.zero_grad),
    (manual.lr_scheduler.StepLR, torch.optim.lr_scheduler.StepLR),
    (manual.lr_scheduler.ExponentialLR, torch.optim.lr_scheduler.ExponentialLR),
    (manual.lr_scheduler.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR),
    (manual.lr_scheduler.LinearLR, torch.optim.lr_scheduler.LinearLR),
    (manual.clip_grad.clip_grad_norm_, nn.utils.clip_grad_norm_), (manual.optim.Optimizer, torch.optim.Optimizer),
    (manual.functional.log_softmax, F.log_softmax), (manual.functional.softplus, F.softplus),
    (manual.clip_grad.clip_grad_value_, nn.utils.clip_grad_value_),
    (manual.init.calculate_gain, nn.init.calculate_gain),
]


@pytest.mark.parametrize("name,param", [("linear", None), ("conv2d", None), ("conv_transpose1d", None),
                                        ("sigmoid", None), ("tanh", None), ("relu", None),
                                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)])
def test_calculate_gain_is_torchs(name, param):
    assert manual.init.calculate_gain(name, param) == pytest.approx(nn.init.calculate_gain(name, param), rel=1e-15)


def signature_problems(ours, theirs):
    """How `ours` (a manual class or function) differs from torch's `theirs`: positional arguments
    in another order, an argument torch does not take, a default that is not torch's."""
    mine = _arguments(ours.__init__ if inspect.isclass(ours) else ours)
    if theirs is nn.Parameter:
        theirs = nn.Parameter.__new__
    their = {p.name: p for p in _arguments(theirs.__init__ if inspect.isclass(theirs) else theirs)}
    their_positional = [p.name for p in their.values()
                        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if theirs is nn.Parameter.__new__:
        their_positional = their_positional[1:]  # cls
    positional = [p.name for p in mine if p.kind == p.POSITIONAL_OR_KEYWORD]
    problems = [] if positional == their_positional[:len(positional)] else [
        f"positional arguments {positional}, torch's {their_positional}"]
    for p in mine:
        if p.name not in their:
            problems.append(f"{p.name} is not torch's")
        elif p.default is not p.empty:
            theirs_default = their[p.name].default
            if not (_default(p.default) == _default(theirs_default) or (
                    isinstance(p.default, float) and isinstance(theirs_default, (int, float))
                    and math.isclose(p.default, theirs_default)) or (
                    # a function of torch's named by its name (TransformerEncoderLayer's activation="relu")
                    isinstance(p.default, str) and callable(theirs_default)
                    and theirs_default.__name__ == p.default)):
                problems.append(f"{p.name}={p.default!r}, torch's {theirs_default!r}")
    return problems


@pytest.mark.parametrize("ours,theirs", SIGNATURES, ids=[getattr(o, "__qualname__", str(o)) for o, _ in SIGNATURES])
def test_arguments_are_torchs(ours, theirs):
    assert signature_problems(ours, theirs) == []


# where a public class or function of manual/ is named as one of torch's, torch's counterpart
TORCH_NAMESPACES = [F, torch, nn, torch.optim, torch.optim.lr_scheduler, nn.init, nn.utils]


def _namesakes():
    """(qualified name, manual's callable, torch's) for every public callable defined in manual/
    whose name torch's namespaces also define as a callable (the first that does)."""
    out = []
    for info in pkgutil.iter_modules(manual.__path__):
        module = importlib.import_module(f"manual.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
                continue
            theirs = [getattr(ns, name) for ns in TORCH_NAMESPACES
                      if callable(getattr(ns, name, None)) and not inspect.ismodule(getattr(ns, name))]
            if theirs:
                out.append((f"{module.__name__}.{name}", obj, theirs[0]))
    return out


NAMESAKES = _namesakes()


def test_the_namesakes_are_found():
    found = {name.rpartition(".")[2] for name, _, _ in NAMESAKES}
    assert {"Linear", "Parameter", "Softmax", "log_softmax", "softplus", "sigmoid", "erf", "Adam", "Optimizer",
            "LinearLR", "MSELoss", "clip_grad_norm_", "calculate_gain"} <= found


@pytest.mark.parametrize("name,ours,theirs", NAMESAKES, ids=[n for n, _, _ in NAMESAKES])
def test_a_manual_name_that_is_torchs_takes_torchs_arguments(name, ours, theirs):
    """No trap of a name that means something else: a function or class named as torch's takes
    torch's arguments, in torch's order, with torch's defaults."""
    assert signature_problems(ours, theirs) == []


def _old_log_softmax(x, dim=1):
    """log_softmax as it was: another default dimension (torch's is None: 0 for a vector)."""


def _old_clip(grads, how):
    """finite_differences' clipping as it was named: not torch.clip(input, min, max)."""


def _old_optimizer_init(self, params, lr, maximize=False):
    """manual.optim.Optimizer as it was made: not torch's Optimizer(params, defaults)."""


@pytest.mark.parametrize("ours,theirs", [(_old_log_softmax, F.log_softmax), (_old_clip, torch.clip),
                                         (_old_optimizer_init, torch.optim.Optimizer)])
def test_the_check_sees_the_traps_that_were_here(ours, theirs):
    assert signature_problems(ours, theirs)
