"""manual/conv.py and manual/pooling.py against torch.nn, in the manner of tinygrad's helper_test_op:
for each case, torch's module and manual's with the same parameters (torch's random ones copied
over) and the same input; the output, grad_input and every parameter gradient compared with the
project's one tolerance table, in float64 and in float32. The tables hold the edge cases by hand
(strides, paddings incl. 'same', dilations, groups incl. depthwise, ceil_mode, count_include_pad,
odd sizes, kernel as large as the input, stride beyond the kernel, ties and NaN in max pooling);
a seeded random sweep adds cases drawn at random (a small one by default, a large one `-m slow`).
"""
import numpy as np
import pytest
import torch
from torch import nn

from manual import conv, pooling
from torch_ref.testing import compare, tolerance

CONVS = ("Conv1d", "Conv2d", "ConvTranspose2d")
DTYPES = ("float64", "float32")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def build(name, args, kwargs, dtype):
    """torch's module and manual's, the same arguments; torch's random parameters copied to manual's."""
    extra = {"dtype": getattr(torch, dtype)} if name in CONVS else {}
    theirs = getattr(nn, name)(*args, **kwargs, **extra)
    mine = getattr(conv if name in CONVS else pooling, name)(*args, **kwargs,
                                                             **({"dtype": np.dtype(dtype)} if extra else {}))
    params = dict(mine.named_parameters())
    assert sorted(params) == sorted(n for n, _ in theirs.named_parameters())
    for n, p in theirs.named_parameters():
        assert params[n].data.shape == tuple(p.shape), n
        params[n].data[...] = p.detach().numpy()
    return theirs, mine


def draw(rng, shape, values):
    """An input: 'normal', or 'ties' (small integers, so that windows hold several maxima)."""
    if values == "ties":
        return rng.integers(0, 3, shape).astype(np.float64)
    return rng.standard_normal(shape)


def expect(mine, theirs, what, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert isinstance(mine, np.ndarray) and mine.dtype == np.dtype(dtype), f"{what}: {type(mine)} {mine.dtype}"
    result = compare(mine, theirs, *tolerance(dtype))
    assert result.ok, f"{what}: {result}"


def check(name, args, kwargs, shape, dtype="float64", values="normal", seed=0, forward_kwargs=None):
    """Forward and backward of manual's module against torch's, one input, one grad_output."""
    forward_kwargs = forward_kwargs or {}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    theirs, mine = build(name, args, kwargs, dtype)
    x = draw(rng, shape, values).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt, y = theirs(xt, **forward_kwargs), mine(x, **forward_kwargs)
    if isinstance(yt, tuple):  # return_indices: torch's indices exactly
        (yt, it), (y, i) = yt, y
        np.testing.assert_array_equal(i, it.numpy())
    expect(y, yt, "output", dtype)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))
    expect(mine.backward(g), xt.grad, "grad_input", dtype)
    params = dict(mine.named_parameters())
    for n, p in theirs.named_parameters():
        expect(params[n].grad, p.grad, f"grad of {n}", dtype)


# (module, args, kwargs, input shape): the edge cases, each in a table of its module
CASES = {
    "Conv2d": [
        ((3, 4, 3), {}, (2, 3, 5, 5)),
        ((3, 5, 3), {"stride": 2, "padding": 1}, (2, 3, 7, 9)),
        ((2, 3, (3, 2)), {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1)}, (1, 2, 8, 7)),
        ((4, 6, 3), {"groups": 2, "padding": 1}, (2, 4, 6, 5)),
        ((4, 8, 3), {"groups": 4, "stride": 2}, (2, 4, 9, 7)),  # depthwise, channel multiplier 2
        ((3, 3, 3), {"groups": 3, "bias": False}, (1, 3, 4, 6)),  # depthwise
        ((2, 4, (2, 4)), {"padding": "same", "dilation": (1, 3)}, (2, 2, 5, 11)),  # odd total: extra on the right
        ((2, 3, 5), {"padding": "same"}, (1, 2, 6, 4)),
        ((2, 3, 3), {"padding": "valid"}, (2, 2, 4, 3)),
        ((2, 3, (5, 4)), {}, (2, 2, 5, 4)),  # kernel == input size
        ((2, 3, 2), {"stride": 3}, (2, 2, 8, 7)),  # stride > kernel: inputs no window reads
        ((3, 2, 5), {"padding": 2}, (1, 3, 5, 6)),  # padding = kernel // 2
        ((6, 4, 1), {"groups": 2}, (2, 6, 3, 5)),
        ((2, 4, 3), {"stride": (2, 3), "padding": (1, 2), "dilation": 2, "groups": 2}, (3, 2, 9, 10)),
    ],
    "Conv1d": [
        ((3, 4, 3), {}, (2, 3, 7)),
        ((4, 6, 4), {"stride": 2, "padding": 1, "groups": 2}, (2, 4, 11)),
        ((2, 3, 4), {"padding": "same", "dilation": 3}, (3, 2, 13)),
        ((3, 3, 5), {"groups": 3, "bias": False, "padding": 2}, (2, 3, 5)),
        ((2, 2, 2), {"stride": 3, "dilation": 2}, (1, 2, 10)),
    ],
    "ConvTranspose2d": [
        ((3, 4, 3), {}, (2, 3, 4, 5)),
        ((4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}, (2, 4, 5, 4)),
        ((4, 2, (2, 3)), {"stride": (3, 1), "padding": (0, 2), "dilation": (2, 3), "output_padding": (2, 1)},
         (2, 4, 3, 4)),  # output_padding ≥ stride where below the dilation
        ((3, 3, 3), {"groups": 3, "stride": 2, "bias": False}, (1, 3, 3, 3)),  # depthwise
        ((2, 3, 4), {"stride": 2, "padding": 1}, (2, 2, 1, 1)),
        ((2, 3, 2), {"stride": 3}, (1, 2, 3, 4)),  # stride > kernel: zeros between
    ],
    "MaxPool2d": [
        ((2,), {}, (2, 3, 6, 6)),
        ((3,), {"stride": 2, "padding": 1}, (2, 2, 7, 9)),
        ((3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 2, 8, 6)),
        (((2, 3),), {"stride": 1, "dilation": (2, 1)}, (1, 2, 7, 6)),
        ((3,), {"stride": (2, 3), "padding": (1, 0), "dilation": 2, "ceil_mode": True}, (2, 2, 9, 8)),
        ((2,), {"stride": 3}, (1, 2, 7, 8)),  # stride > kernel
        (((4, 5),), {}, (2, 2, 4, 5)),  # kernel == input size
        ((3,), {"stride": 1, "padding": 1}, (1, 2, 5, 4)),  # overlapping windows add up
        ((3,), {"stride": 2, "ceil_mode": True, "return_indices": True}, (2, 3, 6, 7)),
        (((17, 16),), {"return_indices": True}, (1, 2, 17, 33)),  # 272 offsets per window: more than uint8 holds
    ],
    "MaxPool1d": [
        ((3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 10)),
        ((2,), {"dilation": 3, "stride": 1}, (2, 2, 9)),
        ((4,), {"stride": 1, "padding": 2, "return_indices": True}, (1, 2, 7)),
        ((3,), {"stride": 5}, (2, 2, 11)),
    ],
    "AvgPool2d": [
        ((2,), {}, (2, 3, 6, 6)),
        ((3,), {"stride": 2, "padding": 1}, (2, 2, 7, 9)),
        ((3,), {"stride": 2, "padding": 1, "count_include_pad": False}, (2, 2, 7, 9)),
        ((3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 2, 8, 6)),
        ((4,), {"stride": 3, "padding": 2, "ceil_mode": True, "count_include_pad": False}, (2, 2, 9, 8)),
        ((4,), {"stride": 3, "padding": 2, "ceil_mode": True}, (1, 2, 10, 7)),
        (((2, 3),), {"stride": (3, 1), "padding": (1, 1), "divisor_override": 5}, (2, 2, 9, 8)),
        ((2,), {"stride": 3}, (1, 2, 7, 8)),  # stride > kernel
        (((5, 3),), {}, (2, 1, 5, 3)),  # kernel == input size
    ],
    "AdaptiveAvgPool2d": [
        ((3,), {}, (2, 3, 7, 5)),
        (((4, None),), {}, (2, 2, 9, 5)),
        (((None, 2),), {}, (1, 2, 5, 7)),
        (((5, 2),), {}, (2, 2, 3, 5)),  # larger than the input along H: overlapping windows
        ((1,), {}, (2, 3, 4, 6)),
        (((3, 3),), {}, (1, 2, 3, 3)),  # output == input: identity
    ],
}
TABLE = [(name, *case) for name, cases in CASES.items() for case in cases]
IDS = [f"{name}{args}{kwargs}{shape}".replace(" ", "") for name, args, kwargs, shape in TABLE]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,args,kwargs,shape", TABLE, ids=IDS)
def test_module_matches_torch(name, args, kwargs, shape, dtype):
    check(name, args, kwargs, shape, dtype)


MAX_POOLS = [case for case in TABLE if case[0].startswith("MaxPool")]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name,args,kwargs,shape", MAX_POOLS, ids=[i for i, c in zip(IDS, TABLE) if c in MAX_POOLS])
def test_max_pool_routes_ties_as_torch(name, args, kwargs, shape, seed):
    """Inputs of a few repeated values: the gradient goes to the window's first maximum, as torch's."""
    check(name, args, kwargs, shape, values="ties", seed=seed)


@pytest.mark.parametrize("name,args,kwargs,shape", [
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (1, 1, 6, 6)),
    ("MaxPool2d", (2,), {"stride": 1}, (1, 1, 3, 3)),
    ("MaxPool1d", (3,), {"stride": 1, "padding": 1}, (1, 1, 5)),
])
def test_max_pool_of_a_constant_input_routes_as_torch(name, args, kwargs, shape):
    """Every window is one tie, and windows at the border hold padding: the gradient goes to the
    first element of the input in each window (never to the padding), overlapping ones adding up."""
    theirs, mine = build(name, args, kwargs, "float64")
    x = np.full(shape, -np.inf if name == "MaxPool1d" else 1.5)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    g = np.arange(1.0, yt.numel() + 1).reshape(tuple(yt.shape))
    yt.backward(torch.tensor(g))
    expect(mine(x), yt, "output", "float64")
    expect(mine.backward(g), xt.grad, "grad_input", "float64")


@pytest.mark.parametrize("kwargs", [{"stride": 2}, {"stride": 3}, {"stride": 2, "padding": 1}],
                         ids=["overlapping", "disjoint", "padded"])
def test_max_pool_with_nan_routes_as_torch(kwargs):
    """A NaN wins its window (torch's scan keeps the last NaN it meets): on each of the three
    ways the module takes (overlapping windows, disjoint ones, padding)."""
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 7))
    x[0, 0, 2, 2] = x[0, 0, 2, 3] = x[0, 1, 4, 4] = np.nan
    theirs, mine = build("MaxPool2d", (3,), {**kwargs, "return_indices": True}, "float64")
    xt = torch.tensor(x, requires_grad=True)
    (yt, it), (y, i) = theirs(xt), mine(x)
    np.testing.assert_array_equal(i, it.numpy())
    expect(y, yt, "output", "float64")
    g = np.ones(tuple(yt.shape))
    yt.backward(torch.tensor(g))
    expect(mine.backward(g), xt.grad, "grad_input", "float64")


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_max_pool_gradient_off_the_argmax_is_zero_whatever_grad_output_holds(bad):
    """torch adds grad_output into the argmax only, so an inf or NaN in it reaches one input
    element and leaves every other at 0 (a product with a 0/1 mask would put NaN there)."""
    theirs, mine = build("MaxPool2d", (2,), {}, "float32")
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    mine(x)
    g = np.ones(tuple(yt.shape), np.float32)
    g[0, 1, 1, 2] = bad
    yt.backward(torch.tensor(g))
    np.testing.assert_array_equal(mine.backward(g), xt.grad.numpy())


@pytest.mark.parametrize("name,args,kwargs", [("Conv2d", (2, 4, 3), {}), ("Conv1d", (2, 3, 2), {"stride": 2}),
                                              ("ConvTranspose2d", (2, 4, 3), {"stride": 2})])
def test_an_array_handed_out_keeps_its_values(name, args, kwargs):
    """The columns buffer is reused between steps only when no one else holds it: the output of
    an earlier step, and columns someone kept, are not written over by the next step."""
    theirs, mine = build(name, args, kwargs, "float64")
    rng = np.random.default_rng(0)
    shape = (2, args[0]) + (6,) * (1 if name == "Conv1d" else 2)
    x1, x2 = rng.standard_normal(shape), rng.standard_normal(shape)
    y1 = mine(x1)
    mine.backward(rng.standard_normal(y1.shape))
    kept, values = mine.columns, mine.columns.copy()
    y1_values = y1.copy()
    y2 = mine(x2)
    mine.backward(rng.standard_normal(y2.shape))
    np.testing.assert_array_equal(kept, values)
    np.testing.assert_array_equal(y1, y1_values)
    expect(y2, theirs(torch.tensor(x2)), "second output", "float64")


def test_sequential_skips_the_first_convs_grad_input_when_asked(monkeypatch):
    """backward(g, input_grad=False): None, the same parameter gradients, and the first
    convolution's grad_input (a third of its work) never computed, as autograd skips it for an
    input that needs no gradient."""
    from manual import activations, container, flatten, modules
    rng = np.random.default_rng(0)
    net = container.Sequential(conv.Conv2d(2, 3, 3), activations.ReLU(), flatten.Flatten(), modules.Linear(48, 2))
    for _, p in net.named_parameters():
        p.data[...] = rng.standard_normal(p.data.shape)
    x, g = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((2, 2))
    net(x)
    assert net.backward(g).shape == x.shape
    full = {n: p.grad.copy() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.zero_grad()

    def refuse(*args, **kwargs):
        raise AssertionError("the first convolution's grad_input was computed")
    monkeypatch.setattr(conv, "transposed_conv", refuse)
    net(x)
    assert net.backward(g, input_grad=False) is None
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.grad, full[n], err_msg=n)


def test_conv_transpose_output_size_as_torch():
    """forward(input, output_size) picks the output_padding that gives that size, as torch's."""
    check("ConvTranspose2d", (2, 3, 3), {"stride": 3, "padding": 1}, (2, 2, 3, 4),
          forward_kwargs={"output_size": [9, 11]})


# The random sweep: valid arguments drawn from a seeded generator, one case per (module, seed).
def _pick(rng, *options):
    return options[int(rng.integers(len(options)))]


def _length(rng, extent, padding=0):
    """An input length the kernel fits in (padded), odd or even."""
    return max(1, extent - 2 * padding) + int(rng.integers(0, 5))


def _random_conv(rng, dims):
    g, cg, og = (int(v) for v in rng.integers(1, 4, 3))
    k, s, d = ([int(v) for v in rng.integers(1, hi, dims)] for hi in (5, 4, 4))
    padding = _pick(rng, "same", "valid", *(int(v) for v in range(max(k) // 2 + 2))) if s == [1] * dims else \
        [int(rng.integers(0, kk // 2 + 2)) for kk in k]
    pads = [0] * dims if isinstance(padding, str) else (padding if isinstance(padding, list) else [padding] * dims)
    shape = [_length(rng, dd * (kk - 1) + 1, 0 if padding == "same" else p) for kk, dd, p in zip(k, d, pads)]
    kwargs = {"stride": tuple(s), "padding": tuple(padding) if isinstance(padding, list) else padding,
              "dilation": tuple(d), "groups": g, "bias": bool(rng.integers(2))}
    return f"Conv{dims}d", (g * cg, g * og, tuple(k)), kwargs, (int(rng.integers(1, 4)), g * cg, *shape)


def _random_conv_transpose(rng):
    g, cg, og = (int(v) for v in rng.integers(1, 4, 3))
    k, s, d = ([int(v) for v in rng.integers(1, hi, 2)] for hi in (5, 4, 4))
    p = [int(rng.integers(0, dd * (kk - 1) // 2 + 1)) for kk, dd in zip(k, d)]
    op = [int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d)]
    kwargs = {"stride": tuple(s), "padding": tuple(p), "output_padding": tuple(op), "groups": g,
              "bias": bool(rng.integers(2)), "dilation": tuple(d)}
    return "ConvTranspose2d", (g * cg, g * og, tuple(k)), kwargs, (int(rng.integers(1, 4)), g * cg,
                                                                  *(int(v) for v in rng.integers(1, 6, 2)))


def _random_max_pool(rng, dims):
    k, s, d = ([int(v) for v in rng.integers(1, hi, dims)] for hi in (5, 5, 4))
    p = [int(rng.integers(0, kk // 2 + 1)) for kk in k]
    kwargs = {"stride": tuple(s), "padding": tuple(p), "dilation": tuple(d), "ceil_mode": bool(rng.integers(2)),
              "return_indices": bool(rng.integers(2))}
    # at least the kernel's extent: no window of padding alone (torch reads outside the input there)
    shape = [_length(rng, dd * (kk - 1) + 1) for kk, dd in zip(k, d)]
    return f"MaxPool{dims}d", (tuple(k),), kwargs, (int(rng.integers(1, 4)), int(rng.integers(1, 4)), *shape)


def _random_avg_pool(rng):
    k, s = ([int(v) for v in rng.integers(1, hi, 2)] for hi in (5, 5))
    p = [int(rng.integers(0, kk // 2 + 1)) for kk in k]
    kwargs = {"stride": tuple(s), "padding": tuple(p), "ceil_mode": bool(rng.integers(2)),
              "count_include_pad": bool(rng.integers(2)), "divisor_override": _pick(rng, None, None, 1, 3, 7)}
    shape = [_length(rng, kk, pp) for kk, pp in zip(k, p)]
    return "AvgPool2d", (tuple(k),), kwargs, (int(rng.integers(1, 4)), int(rng.integers(1, 4)), *shape)


def _random_adaptive(rng):
    out = tuple(_pick(rng, None, *range(1, 10)) for _ in range(2))
    return "AdaptiveAvgPool2d", (out,), {}, (int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                                             *(int(v) for v in rng.integers(1, 10, 2)))


DRAWS = {"Conv1d": lambda rng: _random_conv(rng, 1), "Conv2d": lambda rng: _random_conv(rng, 2),
         "ConvTranspose2d": _random_conv_transpose, "MaxPool1d": lambda rng: _random_max_pool(rng, 1),
         "MaxPool2d": lambda rng: _random_max_pool(rng, 2), "AvgPool2d": _random_avg_pool,
         "AdaptiveAvgPool2d": _random_adaptive}


def random_check(name, seed, dtype):
    rng = np.random.default_rng([seed, list(DRAWS).index(name)])
    case = DRAWS[name](rng)
    values = _pick(rng, "normal", "ties") if "Max" in name else "normal"
    try:
        check(*case, dtype=dtype, values=values, seed=seed)
    except AssertionError as e:
        raise AssertionError(f"{case} {values} seed {seed}: {e}") from None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", DRAWS)
def test_random_cases_match_torch(name, seed, dtype):
    random_check(name, seed, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", DRAWS)
def test_many_random_cases_match_torch(name, dtype):
    for seed in range(5, 305):
        random_check(name, seed, dtype)


ATTRIBUTES = {"Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                         "padding_mode", "output_padding", "transposed"),
              "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"),
              "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
              "AdaptiveAvgPool2d": ("output_size",)}
ATTRIBUTES["Conv2d"] = ATTRIBUTES["ConvTranspose2d"] = ATTRIBUTES["Conv1d"]
ATTRIBUTES["MaxPool1d"] = ATTRIBUTES["MaxPool2d"]


@pytest.mark.parametrize("name,args,kwargs", [
    ("Conv1d", (2, 4, 3), {"stride": 2, "padding": 1}), ("Conv1d", (2, 4, (3,)), {"padding": "same"}),
    ("Conv2d", (2, 4, 3), {"padding": (1, 0), "dilation": 2, "groups": 2}), ("Conv2d", (2, 4, (1, 3)), {"padding": "valid"}),
    ("ConvTranspose2d", (2, 4, 3), {"stride": 2, "output_padding": 1, "bias": False}),
    ("MaxPool1d", (3,), {}), ("MaxPool2d", ((2, 3),), {"stride": 1, "padding": (1, 0)}),
    ("AvgPool2d", (3,), {"divisor_override": 2}), ("AdaptiveAvgPool2d", ((None, 3),), {}),
])
def test_attributes_and_state_dict_are_torchs(name, args, kwargs):
    """The arguments kept as torch keeps them (tuples where torch normalises, as given where it
    does not), the state dict under torch's keys in torch's shapes, the parameters at zero."""
    theirs = getattr(nn, name)(*args, **kwargs)
    mine = getattr(conv if name in CONVS else pooling, name)(*args, **kwargs)
    assert {a: getattr(mine, a) for a in ATTRIBUTES[name]} == {a: getattr(theirs, a) for a in ATTRIBUTES[name]}
    state = mine.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert all(v.dtype == np.float64 and not v.any() for v in state.values())


@pytest.mark.parametrize("name,args,kwargs", [("Conv2d", (2, 4, 3), {"groups": 2, "stride": 2}),
                                              ("Conv1d", (3, 3, 2), {"dilation": 2}),
                                              ("ConvTranspose2d", (2, 4, 3), {"stride": 2, "groups": 2})])
def test_parameter_gradients_accumulate(name, args, kwargs):
    """A second backward adds to the gradients (Parameter.accumulate), as autograd's do."""
    theirs, mine = build(name, args, kwargs, "float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, args[0]) + (5,) * (1 if name == "Conv1d" else 2))
    g = rng.standard_normal(mine(x).shape)
    mine.backward(g)
    first = {n: p.grad.copy() for n, p in mine.named_parameters()}
    mine(x)
    mine.backward(g)
    for n, p in mine.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[n], rtol=1e-15)


@pytest.mark.parametrize("name,args,kwargs,field", [
    ("Conv2d", (2, 4, 3), {"padding_mode": "reflect"}, "padding_mode"),
    ("Conv1d", (2, 4, 3), {"padding_mode": "circular"}, "padding_mode"),
    ("ConvTranspose2d", (2, 4, 3), {"padding_mode": "replicate"}, "padding_mode"),
    ("Conv2d", (2, 4, 3), {"padding": "same", "stride": 2}, "padding"),
    ("Conv2d", (2, 4, 3), {"padding": "full"}, "padding"),
    ("Conv2d", (3, 4, 3), {"groups": 2}, "in_channels"),
    ("Conv2d", (2, 3, 3), {"groups": 2}, "out_channels"),
    ("Conv2d", (2, 4, (3, 3, 3)), {}, "kernel_size"),
    ("Conv2d", (2, 4, 3), {"stride": 0}, "stride"),
    ("Conv2d", (2, 4, 3), {"device": "cuda"}, "device"),
    ("ConvTranspose2d", (2, 4, 3), {"stride": 2, "output_padding": 2}, "output_padding"),
    ("MaxPool2d", (2,), {"padding": 2}, "padding"),
    ("MaxPool1d", (3,), {"dilation": 0}, "dilation"),
    ("AvgPool2d", (3,), {"padding": 2}, "padding"),
    ("AvgPool2d", (3,), {"divisor_override": 0}, "divisor_override"),
    ("AdaptiveAvgPool2d", ((0, 2),), {}, "output_size"),
])
def test_what_torch_refuses_is_refused_naming_the_argument(name, args, kwargs, field):
    with pytest.raises(ValueError, match=field):
        getattr(conv if name in CONVS else pooling, name)(*args, **kwargs)


@pytest.mark.parametrize("module,shape,words", [
    (conv.Conv2d(2, 4, 5), (1, 2, 3, 3), "kernel"),  # the kernel does not fit
    (conv.Conv2d(2, 4, 3), (1, 3, 5, 5), "channels"),
    (conv.Conv1d(2, 4, 3), (2, 5), "batched"),
    (pooling.MaxPool2d(4, stride=5), (1, 1, 3, 3), "too small"),
    (pooling.AvgPool2d(2), (1, 1, 4), "batched"),
])
def test_an_input_that_does_not_fit_is_refused(module, shape, words):
    with pytest.raises(ValueError, match=words):
        module(np.zeros(shape))


def test_conv_transpose_refuses_an_output_size_it_cannot_give():
    with pytest.raises(ValueError, match="output_size"):
        conv.ConvTranspose2d(2, 3, 3, stride=2)(np.zeros((1, 2, 4, 4)), output_size=(12, 9))
