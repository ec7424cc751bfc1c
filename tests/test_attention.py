"""manual/attention.py and manual/transformer.py against torch.nn, and the twin's self-attention
modules (torch_ref/twin/attention.py) against the manual ones' layer-list protocol.

For each case torch's module and manual's get the same parameters (torch's drawn at random, from a
normal distribution, so that the attention weights are not uniform, copied over) and the same
inputs; the outputs, the attention weights, the gradient of every input and of every parameter
are compared with the project's tolerance table, in float64 and float32, with a random upstream
gradient. torch runs in training mode (dropout 0), its regular path: in eval mode torch may take a
fused "fast path" (the twin switches it off, a test below shows the eval mode agrees too).
"""
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from manual.attention import MultiheadAttention, causal_mask
from manual.transformer import TransformerEncoderLayer
from torch_ref.testing import compare, tolerance
from torch_ref.twin import attention as twin
from torch_ref.zoo.mistakes_attention import (ATTENTION_ZOO, MISTAKE_CLASSES, CausalMaskHidesItself,
                                              CausalMaskSeesNext)

torch.set_num_threads(1)
DTYPES = ("float64", "float32")
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning")


def copy_parameters(theirs, mine):
    """torch's parameters drawn from N(0, 1/fan_in) (LayerNorm's weights 1 + N(0, 0.01)) and copied to manual's;
    the names and the state-dict order must be torch's."""
    assert list(mine.state_dict()) == list(theirs.state_dict())
    params = dict(mine.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.startswith("norm") and name.endswith("weight")
                    else torch.randn_like(p) / p.shape[-1] ** 0.5)
            assert params[name].data.shape == tuple(p.shape), name
            params[name].data[...] = p.numpy()


def expect(mine, theirs, what, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert isinstance(mine, np.ndarray) and mine.dtype == np.dtype(dtype), f"{what}: {type(mine)} {mine.dtype}"
    result = compare(mine, theirs, *tolerance(dtype))
    assert result.ok, f"{what}: {result}"


def expect_parameter_grads(theirs, mine, dtype):
    grads = {name: p.grad for name, p in mine.named_parameters()}
    for name, p in theirs.named_parameters():
        if name.endswith("in_proj_bias") and dtype == "float32":
            expect_in_proj_bias(grads[name], p.grad.numpy(), name)
        else:
            expect(grads[name], p.grad, f"grad of {name}", dtype)


def expect_in_proj_bias(mine, theirs, name):
    """float32: the key's third of in_proj_bias's gradient is 0 in exact arithmetic (the key's bias
    adds q · b_k to every score of a row, which softmax ignores), so both sides hold rounding
    noise there, compared to the scale of the other two thirds; those are compared as usual."""
    e = len(theirs) // 3
    expect(mine[:e], theirs[:e], f"grad of {name} (query's third)", "float32")
    expect(mine[2 * e:], theirs[2 * e:], f"grad of {name} (value's third)", "float32")
    scale = np.abs(theirs).max()
    for side in (mine, theirs):
        assert np.abs(side[e:2 * e]).max() <= 1e-5 * scale, f"grad of {name} (key's third): {side[e:2 * e]}"


def causal_as(causal, module):
    """A manual attention module with its layer-list attribute `causal` set (not a constructor
    argument: the constructor takes torch's only), as manual/layered.py sets it."""
    module.causal = causal
    return module


def tensor(x):
    return torch.tensor(x, requires_grad=True)


def layout(rng, n, t, e, batch_first, dtype):
    """An input of n samples, t positions, e features in the module's layout (n None: unbatched)."""
    if n is None:
        return rng.standard_normal((t, e)).astype(dtype)
    shape = (n, t, e) if batch_first else (t, n, e)
    return rng.standard_normal(shape).astype(dtype)


def mask_of(kind, rng, shape, dtype):
    """A mask: None, boolean (about a third masked, never a whole row) or float (added)."""
    if kind is None:
        return None
    if kind == "bool":
        m = rng.random(shape) < 0.3
        m[..., 0] = False
        return m
    return rng.standard_normal(shape).astype(dtype)


# (E, H, L, S, N, batch_first, bias, attn_mask kind and shape, key_padding_mask kind, average)
MHA_CASES = [
    (4, 1, 3, 3, 2, False, True, None, None, True),
    (6, 2, 5, 4, 3, True, True, None, None, False),
    (8, 4, 1, 1, 1, True, False, None, None, True),            # one position
    (8, 2, 7, 5, 2, False, True, ("bool", 2), None, False),
    (8, 2, 5, 5, 3, True, True, ("float", 2), "bool", True),
    (8, 4, 3, 6, 2, True, True, ("bool", 3), "float", False),  # (N·H, L, S)
    (6, 3, 4, 4, None, False, True, ("bool", 2), "bool", False),  # unbatched
    (12, 4, 9, 9, 2, False, False, ("causal", 2), None, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MHA_CASES, ids=lambda c: "-".join(map(str, c)))
def test_multihead_attention_matches_torch(case, dtype):
    """forward(query, key, value, masks) -> (output, weights) and backward's three input gradients
    and four parameter gradients, query of L positions, key and value of S."""
    e, h, length, s, n, batch_first, bias, attn_mask, padding, average = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(e, h, bias=bias, batch_first=batch_first, dtype=getattr(torch, dtype))
    mine = MultiheadAttention(e, h, bias=bias, batch_first=batch_first, dtype=np.dtype(dtype))
    copy_parameters(theirs, mine)
    q, k, v = (layout(rng, n, t, e, batch_first, dtype) for t in (length, s, s))
    masks = {}
    if attn_mask is not None:
        kind, ndim = attn_mask
        shape = (length, s) if ndim == 2 else ((n or 1) * h, length, s)
        masks["attn_mask"] = causal_mask(length) if kind == "causal" else mask_of(kind, rng, shape, dtype)
    if padding is not None:
        masks["key_padding_mask"] = mask_of(padding, rng, (s,) if n is None else (n, s), dtype)
    qt, kt, vt = tensor(q), tensor(k), tensor(v)
    out_t, w_t = theirs(qt, kt, vt, **{key: torch.tensor(m) for key, m in masks.items()},
                        average_attn_weights=average)
    out, w = mine(q, k, v, **masks, average_attn_weights=average)
    expect(out, out_t, "attn_output", dtype)
    expect(w, w_t, "attn_weights", dtype)
    g = rng.standard_normal(out.shape).astype(dtype)
    out_t.backward(torch.tensor(g))
    for what, grad, t in zip(("query", "key", "value"), mine.backward(g), (qt, kt, vt)):
        expect(grad, t.grad, f"grad of {what}", dtype)
    expect_parameter_grads(theirs, mine, dtype)


def test_need_weights_false_returns_none_and_keeps_states():
    mine = MultiheadAttention(4, 2, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    out, weights = mine(x, x, x, need_weights=False)
    assert weights is None and out.shape == (2, 3, 4)
    assert mine.states["attn"].shape == (2, 2, 3, 3)
    np.testing.assert_allclose(mine.states["attn"].sum(axis=-1), 1.0)


def test_a_fully_masked_row_gives_nan_as_torch():
    """A query whose every key is masked: softmax of −inf throughout, NaN in both."""
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64)
    mine = MultiheadAttention(4, 2, batch_first=True)
    copy_parameters(theirs, mine)
    x = np.random.default_rng(1).standard_normal((1, 3, 4))
    mask = np.zeros((3, 3), bool)
    mask[1] = True
    out_t, _ = theirs(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(mask))
    out, _ = mine(x, x, x, attn_mask=mask)
    assert np.isnan(out[0, 1]).all() and torch.isnan(out_t[0, 1]).all()
    expect(out, out_t, "attn_output", "float64")


# (E, H, T, N, batch_first, bias, causal)
SELF_CASES = [
    (4, 1, 1, 1, True, True, True),
    (6, 2, 5, 3, True, True, True),
    (8, 4, 7, 2, False, True, True),
    (8, 2, 3, 4, True, False, False),
    (12, 4, 9, 2, True, True, False),
    (5, 1, 6, 1, False, False, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SELF_CASES, ids=lambda c: "-".join(map(str, c)))
def test_self_attention_in_a_list_matches_the_twin(case, dtype):
    """forward_in_list / backward_in_list (self-attention, the causal mask when `causal`) against the
    twin's forward(x): output, states["attn"], the gradient of x (the sum of three) and of every parameter."""
    e, h, t, n, batch_first, bias, causal = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    torch.manual_seed(1)
    theirs = twin.MultiheadAttention(e, h, bias=bias, batch_first=batch_first, causal=causal,
                                     dtype=getattr(torch, dtype))
    mine = causal_as(causal, MultiheadAttention(e, h, bias=bias, batch_first=batch_first, dtype=np.dtype(dtype)))
    check_in_list(theirs, mine, layout(rng, n, t, e, batch_first, dtype), rng, dtype)
    if causal:
        assert not np.triu(mine.states["attn"], k=1).any(), "a position attends to a later one"


def check_in_list(theirs, mine, x, rng, dtype):
    """Output, states, gradient of x and of the parameters of the list protocol against the twin."""
    copy_parameters(theirs, mine)
    xt = tensor(x)
    yt, y = theirs(xt), mine.forward_in_list(x)
    expect(y, yt, "output", dtype)
    assert set(mine.states) == set(theirs.states) == {"attn"}
    expect(mine.states["attn"], theirs.states["attn"], "states['attn']", dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    expect(mine.backward_in_list(g), xt.grad, "grad of x", dtype)
    expect_parameter_grads(theirs, mine, dtype)


# (d_model, nhead, dim_feedforward, T, N, batch_first, norm_first, activation, bias, causal)
ENCODER_CASES = [
    (4, 1, 8, 1, 2, True, False, "relu", True, True),
    (6, 2, 10, 5, 3, True, False, "gelu", True, True),
    (8, 4, 16, 7, 2, False, True, "relu", True, False),
    (8, 2, 12, 3, 1, True, True, "gelu", False, True),
    (12, 4, 20, 9, 2, False, False, "relu", False, False),
    (8, 1, 6, 4, 3, True, True, "relu", True, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ENCODER_CASES, ids=lambda c: "-".join(map(str, c)))
def test_transformer_encoder_layer_in_a_list_matches_the_twin(case, dtype):
    d, h, ff, t, n, batch_first, norm_first, activation, bias, causal = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    torch.manual_seed(2)
    args = dict(dim_feedforward=ff, dropout=0.0, activation=activation, batch_first=batch_first,
                norm_first=norm_first, bias=bias)
    theirs = twin.TransformerEncoderLayer(d, h, **args, causal=causal, dtype=getattr(torch, dtype))
    mine = causal_as(causal, TransformerEncoderLayer(d, h, **args, dtype=np.dtype(dtype)))
    check_in_list(theirs, mine, layout(rng, n, t, d, batch_first, dtype), rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", (False, True))
def test_transformer_encoder_layer_with_masks_matches_torch(norm_first, dtype):
    """torch's own class (training mode: its regular path) with src_mask and src_key_padding_mask,
    unbatched as well as batched."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    args = dict(dim_feedforward=12, dropout=0.0, norm_first=norm_first)
    theirs = nn.TransformerEncoderLayer(8, 2, **args, dtype=getattr(torch, dtype)).train()
    mine = TransformerEncoderLayer(8, 2, **args, dtype=np.dtype(dtype))
    copy_parameters(theirs, mine)
    for n in (3, None):
        src = layout(rng, n, 5, 8, False, dtype)
        src_mask = mask_of("float", rng, (5, 5), dtype)
        padding = mask_of("bool", rng, (5,) if n is None else (n, 5), dtype)
        st = tensor(src)
        yt = theirs(st, src_mask=torch.tensor(src_mask), src_key_padding_mask=torch.tensor(padding))
        y = mine(src, src_mask=src_mask, src_key_padding_mask=padding)
        expect(y, yt, f"output (N = {n})", dtype)
        g = rng.standard_normal(y.shape).astype(dtype)
        for p in theirs.parameters():
            p.grad = None
        for p in mine.parameters():
            p.zero_grad()
        yt.backward(torch.tensor(g))
        expect(mine.backward(g), st.grad, f"grad of src (N = {n})", dtype)
        expect_parameter_grads(theirs, mine, dtype)


def test_the_twin_in_eval_mode_takes_the_regular_path_and_agrees():
    """In eval mode without gradients torch would take its fused fast path (and return no weights to
    keep); the twin switches it off: same output as manual's, the weights kept."""
    torch.manual_seed(4)
    theirs = twin.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, causal=True,
                                          dtype=torch.float64).eval()
    mine = causal_as(True, TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)).eval()
    copy_parameters(theirs, mine)
    x = np.random.default_rng(4).standard_normal((2, 5, 8))
    with torch.no_grad():
        yt = theirs(torch.tensor(x))
    expect(mine.forward_in_list(x), yt, "output", "float64")
    expect(mine.states["attn"], theirs.states["attn"], "states['attn']", "float64")
    assert torch.backends.mha.get_fastpath_enabled()  # restored after the forward


def test_causal_mask_is_torchs_square_subsequent_mask():
    for size in (1, 2, 5):
        torch_mask = nn.Transformer.generate_square_subsequent_mask(size, dtype=torch.float64).numpy()
        np.testing.assert_array_equal(causal_mask(size), np.isneginf(torch_mask))
        np.testing.assert_array_equal(twin.causal_mask(size).numpy(), causal_mask(size))


@pytest.mark.parametrize("make, message", [
    (lambda: MultiheadAttention(6, 4), "divisible by num_heads"),
    (lambda: MultiheadAttention(4, 2, dropout=0.1), "dropout"),
    (lambda: MultiheadAttention(4, 2, add_bias_kv=True), "add_bias_kv"),
    (lambda: MultiheadAttention(4, 2, vdim=3), "vdim"),
    (lambda: TransformerEncoderLayer(4, 2), "dropout = 0.1"),
    (lambda: TransformerEncoderLayer(4, 2, dropout=0.0, activation="tanh"), "activation"),
])
def test_unsupported_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_is_causal_without_a_mask_is_refused_as_torch():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="is_causal"):
        MultiheadAttention(4, 2, batch_first=True)(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError):
        nn.MultiheadAttention(4, 2, batch_first=True)(*(torch.zeros(2, 3, 4),) * 3, is_causal=True)


# --- the planted mistakes (torch_ref/zoo/mistakes_attention.py) ----------------------------------

@pytest.mark.parametrize("cls", MISTAKE_CLASSES, ids=lambda c: c.__name__)
def test_each_attention_mistake_differs_from_torch_in_the_attention_weights(cls):
    """The mistake's states["attn"] differs from the twin's (and its output with it); the correct
    module's, on the same parameters and input, does not."""
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    theirs = twin.MultiheadAttention(8, 2, batch_first=True, causal=True, dtype=torch.float64)
    x = rng.standard_normal((3, 5, 8))
    attn = {}
    for kind in (MultiheadAttention, cls):
        mine = causal_as(True, kind(8, 2, batch_first=True))
        copy_parameters(theirs, mine)
        out = mine.forward_in_list(x)
        with torch.no_grad():
            out_t = theirs(torch.tensor(x))
        attn[kind] = compare(mine.states["attn"], theirs.states["attn"], *tolerance("float64"))
        assert compare(out, out_t, *tolerance("float64")).ok == (kind is MultiheadAttention)
    assert attn[MultiheadAttention].ok and not attn[cls].ok, str(attn[cls])
    n, h, q, k = attn[cls].index  # where it shows first: a row of a head of a sample
    if cls is CausalMaskSeesNext:
        assert k == q + 1
    if cls is CausalMaskHidesItself:
        assert k <= q


@pytest.mark.parametrize("dtype, mode", [("float64", "free"), ("float32", "resync")])
@pytest.mark.parametrize("mistake", ATTENTION_ZOO, ids=lambda m: m.id)
def test_each_attention_mistake_is_caught_in_lockstep_at_its_module(mistake, dtype, mode):
    """The registry entry on its network: caught at iteration 0, forward stage, the attention module;
    the engine unbroken passes the same run."""
    from torch_ref.lockstep.run import lockstep
    assert (dtype, mode) in mistake.checks
    desc = mistake.described(dtype)
    m = lockstep(desc, impl=mistake(desc), mode=mode).first_mismatch
    assert (m.iteration, m.stage, m.name) == (0, mistake.stage, mistake.tensor), str(m)
    assert lockstep(desc, mode=mode).ok
