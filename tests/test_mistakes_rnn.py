"""torch_ref/zoo/mistakes_rnn.py: each planted recurrent mistake (a registry entry; its faulty module
class is mistakes_rnn.planted_module(entry)) first differs from torch in the tensor its docstring
names (stage, state, time step) on a lone module, and the correct module does not differ at all. The reference is torch's autograd on the unrolled module (tests/test_rnn.py's `unroll`),
compared state by state in the order a lockstep meets them: forward t = 0 … T − 1, then
backward t = T − 1 … 0, then the parameters' gradients."""
import numpy as np
import pytest
import torch

from manual import rnn
from test_rnn import as_list, build, unroll
from torch_ref.testing import compare, tolerance
from torch_ref.zoo import mistakes_rnn as zoo
from torch_ref.zoo.mistakes_rnn import planted_module

torch.set_num_threads(1)
T = 5


def first_difference(cls, kind, bias=True, seed=0):
    """(stage, key, t) of the first tensor where `cls` (a manual module) differs from torch's, or
    ("grad", parameter name, None), or None: one layer, one direction, a loss on every output
    and on h_n (c_n)."""
    torch.manual_seed(seed)
    theirs, correct = build(kind, {"input_size": 3, "hidden_size": 4, "bias": bias}, "float64")
    mine = cls(3, 4, bias=bias)
    for (_, p), (_, q) in zip(mine.named_parameters(), correct.named_parameters()):
        p.data[...] = q.data
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal((T, 2, 3)), rng.standard_normal((T, 2, 4))
    gh = [rng.standard_normal((1, 2, 4)) for _ in range(2 if kind == "LSTM" else 1)]
    out, finals, states = unroll(kind, theirs, torch.tensor(x))
    ((out * torch.tensor(g)).sum() + sum((f * torch.tensor(w)).sum() for f, w in zip(finals, gh))).backward()
    mine(x)
    forward = {key: mine.states[key][0, 0] for key in states}
    mine.backward(g, tuple(gh) if kind == "LSTM" else gh[0])
    backward = {key: mine.grad_states[key][0, 0] for key in states}
    same = lambda a, b: compare(a, b, *tolerance("float64")).ok
    for t in range(T):
        for key in states:
            if not same(forward[key][t], states[key][0][t].detach().numpy()):
                return "forward", key, t
    for t in reversed(range(T)):
        for key in states:
            if not same(backward[key][t], states[key][0][t].grad.numpy()):
                return "backward", key, t
    params = dict(theirs.named_parameters())
    for name, p in mine.named_parameters():
        if not same(p.grad, params[name].grad.numpy()):
            return "grad", name, None
    return None


CASES = [
    (zoo.LSTMGateOrder, "LSTM", ("forward", "h", 0)),
    (zoo.LSTMNoCellGradient, "LSTM", ("backward", "c", T - 2)),
    (zoo.LSTMForgetDerivative, "LSTM", ("backward", "h", T - 2)),
    (zoo.LSTMTruncatedBPTT, "LSTM", ("backward", "h", 0)),
    (zoo.GRUResetBeforeProduct, "GRU", ("forward", "h", 0)),
]


@pytest.mark.parametrize("m,kind,where", CASES, ids=[m.id for m, *_ in CASES])
def test_a_mistake_differs_first_where_it_acts(m, kind, where):
    cls = planted_module(m)
    assert issubclass(cls, getattr(rnn, kind)) and cls is not getattr(rnn, kind)
    assert first_difference(cls, kind) == where


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_the_correct_module_differs_nowhere(kind):
    assert first_difference(getattr(rnn, kind), kind) is None


def test_the_gru_reset_mistake_is_invisible_at_t_0_without_bias():
    """From h_0 = 0 without b_hn both forms give n = tanh(W_in x): the first difference is at t = 1."""
    assert first_difference(planted_module(zoo.GRUResetBeforeProduct), "GRU", bias=False) == ("forward", "h", 1)


@pytest.mark.parametrize("faulty", [False, True], ids=["engine", "lstm-state-not-detached"])
def test_a_state_carried_without_cutting_the_graph_leaks_into_batch_2s_gradients(faulty):
    """Two batches, carry on: outputs, grad_input and batch 1's gradients are torch's either way;
    batch 2's parameter gradients differ only where the graph is not cut."""
    torch.manual_seed(0)
    theirs, correct = build("LSTM", {"input_size": 3, "hidden_size": 4, "batch_first": True}, "float64")
    mine = (planted_module(zoo.LSTMStateNotDetached) if faulty else rnn.LSTM)(3, 4, batch_first=True)
    for (_, p), (_, q) in zip(mine.named_parameters(), correct.named_parameters()):
        p.data[...] = q.data
    mine.carry, hx, rng, differs = True, None, np.random.default_rng(1), []
    for _ in range(2):
        x, g = rng.standard_normal((2, T, 3)), rng.standard_normal((2, T, 4))
        xt = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        for p in mine.parameters():
            p.zero_grad()
        yt, finals = theirs(xt, hx)
        (yt * torch.tensor(g)).sum().backward()
        assert compare(mine.forward_in_list(x), yt.detach().numpy(), *tolerance("float64")).ok
        assert compare(mine.backward_in_list(g), xt.grad.numpy(), *tolerance("float64")).ok
        params = dict(theirs.named_parameters())
        differs.append(any(not compare(p.grad, params[n].grad.numpy(), *tolerance("float64")).ok
                           for n, p in mine.named_parameters()))
        hx = tuple(f.detach() for f in as_list(finals))
    assert differs == [False, faulty]
