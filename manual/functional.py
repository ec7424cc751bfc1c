"""Stable elementwise and row-wise functions, as torch.nn.functional's: the one definition of each,
shared by the activation modules (modules.py) and the losses (losses.py).

    sigmoid(input)                    = 1 / (1 + exp(−x))
    log1p_exp(z)                      = log(1 + exp(z)) = max(z, 0) + log1p(exp(−|z|))        finite for any z
    softplus(input, beta, threshold)  = log1p_exp(beta · x) / beta, or x where beta · x > threshold
    log_softmax(input, dim=None)      = (x − m) − log Σ exp(x − m),  m = max over dim (None: torch's rule)

None of them evaluates exp of a large positive number, so inputs of ±1000 give finite values and no
numpy warning (an exp that underflows to 0 is the correctly rounded result, as in torch; numpy's
default error state ignores underflow). Shapes: the input's, for every function here. Arguments
are torch's (names, order, defaults: `input`, as torch names it, though it shadows the builtin).
"""
import numpy as np


def sigmoid(input):
    """1 / (1 + exp(-x)), torch's formula. For x < -709, exp(-x) overflows to inf and the quotient
    is exactly 0, the correct limit: that overflow is harmless, so its warning is silenced."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-input))


def log1p_exp(z):
    """log(1 + exp(z)) as max(z, 0) + log1p(exp(−|z|)): softplus without torch's threshold, the
    form binary cross-entropy with logits uses (there torch switches to nothing linear)."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def softplus(input, beta=1.0, threshold=20.0):
    """torch.nn.functional.softplus: log(1 + exp(beta · x)) / beta, and x itself where
    beta · x > threshold (torch's switch to the linear function, for numerical stability)."""
    z = input * beta
    return np.where(z > threshold, input, log1p_exp(z) / beta)


def softmax_dim(dim, ndim):
    """torch's dimension for softmax and log_softmax: `dim`, or where it is None torch's legacy
    rule (0 for 0-, 1- and 3-dimensional inputs, else 1), which is 1, the features, for the
    batched (N, C) arrays here. (torch also warns of the implicit choice; this does not.)"""
    if dim is not None:
        return dim
    return 0 if ndim in (0, 1, 3) else 1


def log_softmax(input, dim=None):
    """torch.nn.functional.log_softmax(input, dim) through a stable log-sum-exp:

        (x − m) − log Σ_dim exp(x − m),   m = max over dim      (the shape of x; dim=1 is the features)
    """
    dim = softmax_dim(dim, input.ndim)
    z = input - input.max(axis=dim, keepdims=True)  # max 0 along dim
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))
