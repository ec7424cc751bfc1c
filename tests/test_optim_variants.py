"""ε inside the square root (`eps_inside_sqrt = true`, rmsprop and adagrad): the twin's own
reference classes against the rule written out here, and the option deciding the verdict on an
implementation written that way. (Adadelta, NAdam, RAdam and the variants in lockstep:
tests/test_optim.py's table.)"""
import numpy as np
import pytest
import torch

import manual.trainer
from torch_ref.description import spec
from torch_ref.lockstep.run import lockstep
from torch_ref.twin.optim import make_optimizer


def rmsprop_inside(theta, grads, lr, alpha, eps, momentum=0.0, centered=False, weight_decay=0.0):
    """RMSprop with d = √(v + ε) (√(v − ḡ² + ε) centered), step by step, as numpy."""
    v, g_avg, b = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    for g in grads:
        g = g + weight_decay * theta
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
        d = np.sqrt(v - g_avg * g_avg + eps)
        if momentum > 0:
            b = momentum * b + g / d
            theta = theta - lr * b
        else:
            theta = theta - lr * g / d
    return theta


def adagrad_inside(theta, grads, lr, eps, lr_decay=0.0, weight_decay=0.0):
    """Adagrad with θ ← θ − γ / (1 + (t − 1) lr_decay) · g / √(s + ε)."""
    s = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        s = s + g * g
        theta = theta - lr / (1 + (t - 1) * lr_decay) * g / np.sqrt(s + eps)
    return theta


# (optimizer section, the rule written out)
VARIANTS = [
    ({"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 0.01},
     lambda th, gs: rmsprop_inside(th, gs, 0.01, 0.9, 0.01)),
    ({"name": "rmsprop", "lr": 0.01, "alpha": 0.8, "eps": 0.01, "momentum": 0.5, "centered": True,
      "weight_decay": 0.1}, lambda th, gs: rmsprop_inside(th, gs, 0.01, 0.8, 0.01, 0.5, True, 0.1)),
    ({"name": "adagrad", "lr": 0.1, "eps": 0.01}, lambda th, gs: adagrad_inside(th, gs, 0.1, 0.01)),
    ({"name": "adagrad", "lr": 0.1, "eps": 0.01, "lr_decay": 0.2, "weight_decay": 0.3},
     lambda th, gs: adagrad_inside(th, gs, 0.1, 0.01, 0.2, 0.3)),
]


@pytest.mark.parametrize("opt,rule", VARIANTS, ids=[str(o) for o, _ in VARIANTS])
def test_the_twins_variant_is_the_rule_with_eps_inside(opt, rule):
    rng = np.random.default_rng(0)
    theta0, grads = rng.standard_normal(6), [rng.standard_normal(6) for _ in range(5)]
    p = torch.tensor(theta0, requires_grad=True)
    optimizer = make_optimizer([p], {**opt, "eps_inside_sqrt": True})
    for g in grads:
        p.grad = torch.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(p.detach().numpy(), rule(theta0, grads), rtol=1e-13, atol=1e-15)
    torch_p = torch.tensor(theta0, requires_grad=True)  # and torch's own rule is another
    theirs = make_optimizer([torch_p], opt)
    for g in grads:
        torch_p.grad = torch.tensor(g)
        theirs.step()
    assert not np.allclose(torch_p.detach().numpy(), p.detach().numpy(), rtol=1e-6)


def description(opt, inside):
    return spec.parse({"network": {"sizes": [3, 5, 2], "activation": ["tanh", "identity"], "loss": "mse"},
                       "init": {"seed": 0}, "optimizer": {**opt, "eps_inside_sqrt": inside},
                       "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4}, "run": {"steps": 6}})


@pytest.mark.parametrize("opt", [o for o, _ in VARIANTS], ids=[str(o) for o, _ in VARIANTS])
def test_eps_inside_passes_with_the_option_and_fails_without(opt):
    """An implementation written with ε inside (the manual engine built so) is certified where
    the description says eps_inside_sqrt = true, and fails at the first update without it."""
    implementation = manual.trainer.Trainer(description(opt, True))
    assert lockstep(description(opt, True), impl=implementation).ok
    result = lockstep(description(opt, False), impl=manual.trainer.Trainer(description(opt, True)))
    assert not result.ok
    assert result.first_mismatch.stage in ("param", "optim") and result.first_mismatch.iteration in (0, 1)
