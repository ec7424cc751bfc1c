"""manual/rnn.py's RNN, LSTM and GRU against torch.nn's, in the manner of tests/test_conv_pool.py:
torch's module and manual's with the same (torch's random) parameters and the same input; output,
h_n (c_n), grad_input, the gradient of h_0 (c_0) and every parameter's gradient compared with the
project's tolerance table, in float64 and float32. Cases are drawn at random (sizes, lengths 1, 2
and odd, batch sizes 1 and odd, 1–3 layers, both directions, bias, batch_first, hx given or not,
tanh and relu) after a few by hand; a larger sweep runs with -m slow.

`states` and `grad_states` are checked against torch's autograd on an unrolled twin (`unroll`): the
same weights, one step at a time, each state retain_grad()-ed; the unroll's own output is checked
against nn's first. Then the list protocol, the carried state, LastStep and the refusals.
"""
import numpy as np
import pytest
import torch
from torch import nn

from manual import rnn, sequence
from torch_ref.testing import compare, tolerance

torch.set_num_threads(1)
DTYPES = ("float64", "float32")
KINDS = ("RNN", "LSTM", "GRU")


def build(kind, kwargs, dtype):
    """torch's module and manual's, the same arguments; torch's random parameters copied to manual's
    (the names, their order and shapes must be torch's)."""
    theirs = getattr(nn, kind)(**kwargs, dtype=getattr(torch, dtype))
    mine = getattr(rnn, kind)(**kwargs, dtype=np.dtype(dtype))
    params = list(mine.named_parameters())
    assert [n for n, _ in params] == [n for n, _ in theirs.named_parameters()]
    for (n, p), (_, q) in zip(params, theirs.named_parameters()):
        assert p.data.shape == tuple(q.shape), n
        p.data[...] = q.detach().numpy()
    return theirs, mine


def expect(mine, theirs, what, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert isinstance(mine, np.ndarray) and mine.dtype == np.dtype(dtype), f"{what}: {type(mine)} {mine.dtype}"
    result = compare(mine, theirs, *tolerance(dtype))
    assert result.ok, f"{what}: {result}"


def inputs(rng, case, dtype):
    """x, hx (or None), grad_output and grad of h_n (c_n) (or None), as numpy arrays."""
    t, n, kw = case["T"], case["N"], case["kwargs"]
    layers, dirs, hid = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1, kw["hidden_size"]
    draw = lambda *shape: rng.standard_normal(shape).astype(dtype)
    x = draw(n, t, kw["input_size"]) if kw.get("batch_first") else draw(t, n, kw["input_size"])
    states = 2 if case["kind"] == "LSTM" else 1
    hx = [draw(layers * dirs, n, hid) for _ in range(states)] if case["hx"] else None
    g = draw(*(x.shape[:2] + (dirs * hid,)))
    gh = [draw(layers * dirs, n, hid) for _ in range(states)] if case["hx"] else None
    return x, hx, g, gh


def pack(kind, parts, tensor=False):
    """A list of one or two state arrays as the module takes it: an array, or (h, c) for LSTM."""
    if parts is None:
        return None
    parts = [torch.tensor(p, requires_grad=True) for p in parts] if tensor else parts
    return tuple(parts) if kind == "LSTM" else parts[0]


def as_list(value):
    return list(value) if isinstance(value, tuple) else [value]


def check(case, dtype, seed=0):
    """Forward and backward of manual's module against torch's, hx and grad of h_n as the case says."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    kind = case["kind"]
    theirs, mine = build(kind, case["kwargs"], dtype)
    x, hx, g, gh = inputs(rng, case, dtype)
    xt, hxt = torch.tensor(x, requires_grad=True), pack(kind, hx, tensor=True)
    yt, finals_t = theirs(xt, hxt)
    y, finals = mine(x, pack(kind, hx))
    expect(y, yt, "output", dtype)
    for name, a, b in zip(("h_n", "c_n"), as_list(finals), as_list(finals_t)):
        expect(a, b, name, dtype)
    loss = (yt * torch.tensor(g)).sum()
    if gh is not None:
        loss = loss + sum((b * torch.tensor(w)).sum() for b, w in zip(as_list(finals_t), gh))
    loss.backward()
    expect(mine.backward(g, pack(kind, gh)), xt.grad, "grad_input", dtype)
    if hx is not None:
        for name, a, b in zip(("grad of h_0", "grad of c_0"), as_list(mine.grad_hx), as_list(hxt)):
            expect(a, b.grad, name, dtype)
    params = dict(mine.named_parameters())
    for n, p in theirs.named_parameters():
        expect(params[n].grad, p.grad, f"grad of {n}", dtype)
    return mine, theirs, (x, hx, g, gh)


def draw_case(rng):
    """A random case: module, sizes, lengths 1, 2 or odd, batch 1 or odd, layers, flags."""
    kind = KINDS[rng.integers(3)]
    kwargs = {"input_size": int(rng.integers(1, 6)), "hidden_size": int(rng.integers(1, 7)),
              "num_layers": int(rng.integers(1, 4)), "bias": bool(rng.integers(2)),
              "batch_first": bool(rng.integers(2)), "bidirectional": bool(rng.integers(2))}
    if kind == "RNN":
        kwargs["nonlinearity"] = ("tanh", "relu")[rng.integers(2)]
    return {"kind": kind, "kwargs": kwargs, "T": int(rng.choice([1, 2, 3, 5, 7])), "N": int(rng.choice([1, 3, 5])),
            "hx": bool(rng.integers(2))}


def case(kind, t, n, hx=False, **kwargs):
    return {"kind": kind, "kwargs": {"input_size": 3, "hidden_size": 4, **kwargs}, "T": t, "N": n, "hx": hx}


HAND = [
    case("RNN", 5, 3),
    case("RNN", 3, 1, hx=True, nonlinearity="relu", num_layers=2, bidirectional=True),
    case("LSTM", 1, 1),
    case("LSTM", 7, 3, hx=True, num_layers=3, bidirectional=True, batch_first=True),
    case("LSTM", 2, 5, bias=False, num_layers=2),
    case("GRU", 5, 3, hx=True, bidirectional=True),
    case("GRU", 1, 3, num_layers=3, batch_first=True, bias=False),
]
RANDOM = [draw_case(np.random.default_rng(seed)) for seed in range(24)]
SLOW = [draw_case(np.random.default_rng(1000 + seed)) for seed in range(300)]


def ident(c):
    kw = c["kwargs"]
    flags = "".join(k[0] for k in ("bias", "batch_first", "bidirectional") if kw.get(k))
    return (f"{c['kind']}{kw.get('nonlinearity', '')}-F{kw['input_size']}H{kw['hidden_size']}"
            f"L{kw.get('num_layers', 1)}-T{c['T']}N{c['N']}-{flags}{'-hx' if c['hx'] else ''}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", HAND + RANDOM, ids=map(ident, HAND + RANDOM))
def test_module_matches_torch(c, dtype):
    check(c, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", SLOW, ids=map(ident, SLOW))
def test_module_matches_torch_sweep(c, dtype):
    check(c, dtype, seed=7)


# --- states and grad_states: torch's autograd, one step at a time --------------------------------

def step(kind, m, x, h, c, suffix):
    """One step of torch module m's cell (layer and direction `suffix`), torch's formulas."""
    w = lambda name: getattr(m, f"{name}{suffix}", None)
    lin = lambda v, wn, bn: v @ w(wn).T + (w(bn) if m.bias else 0)
    gi, gh = lin(x, "weight_ih", "bias_ih"), lin(h, "weight_hh", "bias_hh")
    if kind == "RNN":
        return (torch.tanh if m.nonlinearity == "tanh" else torch.relu)(gi + gh), None
    if kind == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    (ir, iz, inn), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return (1 - z) * n + z * h, None


def unroll(kind, m, x, hx=None):
    """torch module m's forward, unrolled: (output (T, N, D·H), [h_n, c_n], {"h": states[l][d][t],
    "c": ...}), x (T, N, F) a tensor, every state retain_grad()-ed (so .grad is dE/dh_t after a
    backward: the total derivative)."""
    dirs, hid = 2 if m.bidirectional else 1, m.hidden_size
    n = x.shape[1]
    hx = as_list(hx) if hx is not None else [torch.zeros(m.num_layers * dirs, n, hid, dtype=x.dtype)] * 2
    states, finals = {"h": [], "c": []}, [[], []]
    for layer in range(m.num_layers):
        outs = []
        for d in range(dirs):
            k, h = layer * dirs + d, hx[0][layer * dirs + d]
            c = hx[1][k] if kind == "LSTM" else None
            hs, cs = [None] * len(x), [None] * len(x)
            for t in (reversed(range(len(x))) if d else range(len(x))):
                h, c = step(kind, m, x[t], h, c, f"_l{layer}" + ("_reverse" if d else ""))
                hs[t], cs[t] = h, c
                for s in (h, c) if c is not None else (h,):
                    s.retain_grad()
            states["h"].append(hs)
            states["c"].append(cs)
            finals[0].append(h)
            finals[1].append(c)
            outs.append(torch.stack(hs))
        x = torch.cat(outs, dim=2)
    finals = [torch.stack(f) for f in finals[:2 if kind == "LSTM" else 1]]
    return x, finals, {key: v for key, v in states.items() if key == "h" or kind == "LSTM"}


def stacked(nested, layers, dirs, grad=False):
    """[l·D + d][t] tensors as one (L, D, T, N, H) array (their .grad with grad=True)."""
    arr = np.stack([np.stack([(s.grad if grad else s).detach().numpy() for s in ts]) for ts in nested])
    return arr.reshape((layers, dirs) + arr.shape[1:])


STATE_CASES = [HAND[1], HAND[3], HAND[5], case("GRU", 4, 3, num_layers=2, batch_first=True),
               case("RNN", 3, 5, hx=True, num_layers=3)]


@pytest.mark.parametrize("c", STATE_CASES, ids=map(ident, STATE_CASES))
def test_states_and_their_gradients_match_an_unrolled_torch(c):
    """states[key][l, d, t] is torch's state after step t, grad_states its total derivative."""
    dtype, kind = "float64", c["kind"]
    mine, theirs, (x, hx, g, gh) = check(c, dtype)
    xt = torch.tensor(x.transpose(1, 0, 2) if c["kwargs"].get("batch_first") else x)
    out, finals, states = unroll(kind, theirs, xt, pack(kind, hx, tensor=True))
    reference = theirs(torch.tensor(x), pack(kind, hx, tensor=True))[0]
    expect((out.transpose(0, 1) if theirs.batch_first else out).detach().numpy(), reference, "unroll", dtype)
    go = torch.tensor(g.transpose(1, 0, 2) if theirs.batch_first else g)
    loss = (out * go).sum() + (sum((f * torch.tensor(w)).sum() for f, w in zip(finals, gh)) if gh else 0)
    loss.backward()
    dirs = 2 if theirs.bidirectional else 1
    assert sorted(mine.states) == sorted(states) == sorted(mine.grad_states)
    for key in states:
        expect(mine.states[key], stacked(states[key], theirs.num_layers, dirs), f"states[{key}]", dtype)
        expect(mine.grad_states[key], stacked(states[key], theirs.num_layers, dirs, grad=True),
               f"grad_states[{key}]", dtype)


# --- unbatched input, the layer list's protocol, the carried state --------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_is_torchs(kind):
    rng = np.random.default_rng(3)
    theirs, mine = build(kind, {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True},
                         "float64")
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 8))
    xt = torch.tensor(x, requires_grad=True)
    yt, finals_t = theirs(xt)
    y, finals = mine(x)
    expect(y, yt, "output", "float64")
    for a, b in zip(as_list(finals), as_list(finals_t)):
        expect(a, b, "h_n", "float64")
    (yt * torch.tensor(g)).sum().backward()
    expect(mine.backward(g), xt.grad, "grad_input", "float64")


def batches(rng, sizes, t=4, f=3):
    return [(rng.standard_normal((n, t, f)), rng.standard_normal((n, t, 2 * 5))) for n in sizes]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("carry", [True, False])
def test_a_list_carries_the_state_across_batches_with_the_graph_cut(kind, carry):
    """forward_in_list / backward_in_list over three batches (the third of another size): with
    carry on, each starts from the last h_n (c_n), torch's hx = h_n.detach(); the gradients are
    batch 2's alone. Off (or another batch size): from zeros."""
    theirs, mine = build(kind, {"input_size": 3, "hidden_size": 5, "batch_first": True, "bidirectional": True},
                         "float64")
    mine.carry, hx = carry, None
    for x, g in batches(np.random.default_rng(4), (3, 3, 2)):
        if hx is not None and as_list(hx)[0].shape[1] != len(x):
            hx = None
        xt = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        for p in mine.parameters():
            p.zero_grad()
        yt, finals = theirs(xt, hx)
        (yt * torch.tensor(g)).sum().backward()
        expect(mine.forward_in_list(x), yt, "output", "float64")
        expect(mine.backward_in_list(g), xt.grad, "grad_input", "float64")
        for n, p in mine.named_parameters():
            expect(p.grad, dict(theirs.named_parameters())[n].grad, f"grad of {n}", "float64")
        hx = (tuple(f.detach() for f in finals) if kind == "LSTM" else finals.detach()) if carry else None
    mine.reset_state()
    assert mine.hx is None


def test_last_step_takes_t_minus_one():
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 2))
    xt = torch.tensor(x, requires_grad=True)
    xt[:, -1].backward(torch.tensor(g))
    m = sequence.LastStep()
    expect(m(x), xt[:, -1], "output", "float64")
    expect(m.backward(g), xt.grad, "grad_input", "float64")


@pytest.mark.parametrize("kind,kwargs,message", [
    ("LSTM", {"dropout": 0.5}, "dropout"),
    ("GRU", {"dropout": 0.1, "num_layers": 2}, "dropout"),
    ("LSTM", {"proj_size": 2}, "proj_size"),
    ("RNN", {"nonlinearity": "sigmoid"}, "nonlinearity"),
    ("RNN", {"num_layers": 0}, "num_layers"),
    ("GRU", {"device": "cuda"}, "device"),
])
def test_what_is_not_supported_is_refused_by_name(kind, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(rnn, kind)(3, 4, **kwargs)


def test_a_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="input_size"):
        rnn.GRU(3, 4)(np.zeros((2, 2, 5)))


# --- the registry and the layer list's initialisation ---------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_registry_defaults_are_torchs_and_the_classes_own(kind):
    """torch's RNN/LSTM/GRU take *args: their arguments are RNNBase's (RNN's nonlinearity its own)."""
    import inspect
    from manual.layered import LAYER_CLASSES
    from manual.names import LAYER_REGISTRY, REQUIRED
    entry = LAYER_REGISTRY[kind]
    assert LAYER_CLASSES[kind] is getattr(rnn, kind)
    ours = inspect.signature(getattr(rnn, kind)).parameters
    base = inspect.signature(nn.RNNBase.__init__).parameters
    for arg, default in entry.args.items():
        expected = inspect.Parameter.empty if default == REQUIRED else default
        assert ours[arg].default == expected, arg
        assert arg == "nonlinearity" or base[arg].default == expected, arg
    assert nn.RNN(2, 3).nonlinearity == entry.args.get("nonlinearity", "tanh")


def test_a_layer_list_draws_torchs_recurrent_default():
    """Every parameter of an LSTM in a list is U(±1/√H) (torch's reset_parameters), not zero."""
    from manual.init import layered_state
    state = layered_state([{"type": "GRU", "input_size": 3, "hidden_size": 16, "num_layers": 2,
                            "bidirectional": True, "bias": True, "batch_first": True, "dropout": 0.0}], {"seed": 0})
    assert len(state) == 16 and list(state) == [f"layers.0.{n}" for n, _ in nn.GRU(3, 16, 2, bidirectional=True)
                                                .named_parameters()]
    for value in state.values():
        assert 0.2 < np.abs(value).max() <= 0.25 and value.std() > 0.1
