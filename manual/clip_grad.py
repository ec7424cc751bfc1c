"""Gradient clipping, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_, on `Parameter.grad`
in place, between backward and the optimizer step (so the lockstep's `grad` stage sees clipped
gradients).

    clip_grad_norm_:   n = ‖(‖g₁‖_p, ‖g₂‖_p, …)‖_p      the norm of the per-parameter norms
                       (p = inf: n = max_i max|g_i|)
                       g ← g · min(1, max_norm / (n + 1e-6))      always multiplied, as torch does
    clip_grad_value_:  g ← clamp(g, −clip_value, clip_value)

Signatures as torch's: clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False)
and clip_grad_value_(parameters, clip_value); `parameters` is one Parameter or an iterable of them
(torch's `foreach` switch is not taken).
"""
import math

import numpy as np


def _as_list(parameters):
    """One Parameter (anything with a `grad`) or an iterable of them, as a list, as torch accepts."""
    return [parameters] if hasattr(parameters, "grad") else list(parameters)


def total_norm(grads, norm_type=2.0):
    """‖(‖g₁‖_p, ‖g₂‖_p, …)‖_p over the gradients, in their dtype."""
    norms = np.array([np.linalg.norm(g.ravel(), ord=norm_type) for g in grads], dtype=grads[0].dtype)
    return np.linalg.norm(norms, ord=norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale every gradient by min(1, max_norm / (total norm + 1e-6)); returns the total norm
    (0.0 when no parameter has a gradient). With error_if_nonfinite, a total norm that is NaN or
    infinite raises RuntimeError before anything is scaled, as torch's does."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return 0.0
    norm_type = float(norm_type)  # torch accepts "inf" too
    n = total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(n):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite ({n}), "
                           "so it cannot be clipped")
    coef = min(grads[0].dtype.type(max_norm) / (n + grads[0].dtype.type(1e-6)), 1.0)
    for g in grads:
        g *= coef
    return n


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [−clip_value, clip_value]."""
    for p in _as_list(parameters):
        if p.grad is not None:
            np.clip(p.grad, -clip_value, clip_value, out=p.grad)
