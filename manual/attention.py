"""Multi-head attention in numpy, as torch.nn.MultiheadAttention (torch keeps it in
torch/nn/modules/activation.py and torch/nn/functional.py's multi_head_attention_forward).

With E = embed_dim, H = num_heads, d = E / H, a query of L positions and a key and value of S:

    q = query @ W_q.T + b_q,  k = key @ W_k.T + b_k,  v = value @ W_v.T + b_v     W_q, W_k, W_v: in_proj_weight's thirds
    q, k, v split into H heads of d features: (N, H, L, d), (N, H, S, d)
    scores = (q · √(1/d)) @ k.T + mask                                           (N, H, L, S)
    attn   = softmax(scores) over the keys (the last axis)                       (N, H, L, S)
    out    = out_proj(merge_heads(attn @ v))                                     (N, L, E)

Backward, with g the gradient of the merged heads (out_proj's grad_input, split into heads):

    grad_attn   = g @ v.T,   grad_v = attn.T @ g
    grad_scores = attn · (grad_attn − Σ_S grad_attn · attn)                      softmax's Jacobian
    grad_q = grad_scores @ k · √(1/d),   grad_k = grad_scores.T @ q · √(1/d)
    grad_in_proj_weight = [grad_q; grad_k; grad_v].T @ [query; key; value]       (per third)
    grad_query = grad_q @ W_q   (and key, value likewise)

Every product is batched over the samples and the heads at once (numpy's matmul on 4-axis arrays):
no Python loop. A mask is added to the scores: a boolean one (True: not allowed to attend) as
−inf, a float one as it is; a row with every key masked gives NaN, as torch's softmax does.
"""
import math

import numpy as np

from .module import Module
from .modules import Linear, Parameter
from .normalization import resolve_dtype


def causal_mask(size):
    """The boolean causal mask of `size` positions, (size, size): True above the diagonal (position
    i may not see j > i); torch's nn.Transformer.generate_square_subsequent_mask as booleans (it
    gives −inf where this gives True and 0 elsewhere)."""
    return np.triu(np.ones((size, size), dtype=bool), k=1)


def additive(mask, dtype):
    """A mask as the amount added to the scores: a boolean mask as −inf where True (torch's
    F._canonical_mask), a float one as it is; None stays None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.where(mask, -np.inf, 0.0).astype(dtype)
    return mask.astype(dtype, copy=False)


def softmax_last(scores):
    """Softmax over the last axis, stable (the row's maximum subtracted); a row that is −inf
    throughout gives NaN, as torch's."""
    with np.errstate(invalid="ignore"):
        z = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
    add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None, dtype=None).

    Parameters as torch names them: in_proj_weight (3E, E), in_proj_bias (3E,), out_proj.weight
    (E, E), out_proj.bias (E,) (out_proj a child Linear). They start at zero: manual.init or
    load_state_dict sets them. Not supported (refused): dropout other than 0, add_bias_kv,
    add_zero_attn, kdim or vdim other than embed_dim.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (attn_output, attn_weights), as torch's:
    query (L, N, E), key and value (S, N, E) ((N, L, E) and (N, S, E) with batch_first; (L, E)
    and (S, E) unbatched); attn_mask (L, S) or (N·H, L, S), key_padding_mask (N, S), each boolean
    (True: masked) or float (added); is_causal is a hint, as torch's: attn_mask must be given.
    attn_weights: (N, L, S) averaged over the heads, (N, H, L, S) not, None without need_weights.
    `states` = {"attn": the weights after softmax, (N, H, L, S)} after every forward.

    backward(grad_output) -> (grad_query, grad_key, grad_value), each its input's shape, for the
    gradient of attn_output (the weights returned are not differentiated through).

    In a layer list it is self-attention (forward_in_list): forward(x, x, x) with the causal mask
    when the attribute `causal` is true (a description's own argument, not torch's: the constructor
    takes torch's only, and manual/layered.py sets it), its gradient the sum of the three.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        dtype = resolve_dtype(device, dtype)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        unsupported = {"dropout": (dropout, 0), "add_bias_kv": (add_bias_kv, False),
                       "add_zero_attn": (add_zero_attn, False)}
        for name, (value, only) in unsupported.items():
            if value != only:
                raise ValueError(f"MultiheadAttention: {name} = {value!r} is not supported (only {only!r})")
        for name, value in (("kdim", kdim), ("vdim", vdim)):
            if value not in (None, embed_dim):
                raise ValueError(f"MultiheadAttention: {name} = {value!r} is not supported (only None: embed_dim)")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.causal = False  # a layer list's own argument (not torch's): set after construction
        self.in_proj_weight = Parameter(np.zeros((3 * embed_dim, embed_dim), dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.states = {}

    def named_children(self):
        yield "out_proj", self.out_proj

    def named_parameters(self, prefix=""):
        yield f"{prefix}in_proj_weight", self.in_proj_weight
        if self.in_proj_bias is not None:
            yield f"{prefix}in_proj_bias", self.in_proj_bias
        yield from self.out_proj.named_parameters(f"{prefix}out_proj.")

    def named_state(self, prefix=""):
        """torch's state-dict order: in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias."""
        yield from ((name, p.data) for name, p in self.named_parameters(prefix))

    def batched(self, x):
        """An input as (N, T, E): torch's layout (batch_first or not, or unbatched) made batch first."""
        if x.ndim == 2:
            return x[None]
        return x if self.batch_first else x.transpose(1, 0, 2)

    def unbatched(self, y, like):
        """(N, T, E) back in the layout of the input `like`."""
        if like.ndim == 2:
            return y[0]
        return y if self.batch_first else y.transpose(1, 0, 2)

    def heads(self, x):
        """(N, T, E) -> (N, H, T, d)."""
        n, t, _ = x.shape
        return x.reshape(n, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def merge(self, x):
        """(N, H, T, d) -> (N, T, E)."""
        n, _, t, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(n, t, self.embed_dim)

    def project(self, x, third):
        """x @ W.T + b for one third of the input projection (0: query, 1: key, 2: value)."""
        e = self.embed_dim
        y = x @ self.in_proj_weight.data[third * e:(third + 1) * e].T
        if self.in_proj_bias is not None:
            y += self.in_proj_bias.data[third * e:(third + 1) * e]
        return y

    def mask(self, attn_mask, key_padding_mask, n, dtype):
        """The amount added to the scores, broadcasting against (N, H, L, S), or None."""
        total = None
        attn_mask, key_padding_mask = additive(attn_mask, dtype), additive(key_padding_mask, dtype)
        if attn_mask is not None:
            if attn_mask.ndim == 3:  # (N·H, L, S), or (H, L, S) unbatched
                attn_mask = attn_mask.reshape(n, self.num_heads, *attn_mask.shape[1:])
            total = attn_mask
        if key_padding_mask is not None:
            padding = key_padding_mask.reshape(n, 1, 1, -1)
            total = padding if total is None else total + padding
        return total

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal is a hint (as torch's): give the causal mask as "
                             "attn_mask too")
        self.like = (query, key, value)
        q_in, k_in, v_in = self.batched(query), self.batched(key), self.batched(value)
        self.inputs = (q_in, k_in, v_in)
        self.scale = scale = self.scaling()
        q = self.heads(self.project(q_in, 0))
        k = self.heads(self.project(k_in, 1))
        v = self.heads(self.project(v_in, 2))
        scores = (q * scale) @ k.transpose(0, 1, 3, 2)  # (N, H, L, S)
        added = self.mask(attn_mask, key_padding_mask, q.shape[0], scores.dtype)
        if added is not None:
            scores = scores + added
        attn = self.softmax(scores)
        self.q, self.k, self.v, self.attn = q, k, v, attn
        self.states = {"attn": attn}
        n, _, length, _ = q.shape
        out = self.out_proj.forward(self.merge(attn @ v).reshape(n * length, self.embed_dim))
        out = self.unbatched(out.reshape(n, length, self.embed_dim), query)
        if not need_weights:
            return out, None
        weights = attn.mean(axis=1) if average_attn_weights else attn
        return out, weights[0] if query.ndim == 2 else weights

    def scaling(self):
        """The factor of the scores, √(1/d) as torch's (a planted mistake overrides it)."""
        return math.sqrt(1.0 / self.head_dim)

    def softmax(self, scores):
        """The attention weights from the scores: softmax over the keys (a planted mistake overrides it)."""
        return softmax_last(scores)

    def backward(self, grad_output):
        """(grad_query, grad_key, grad_value) for the gradient of attn_output; accumulates the
        parameter gradients."""
        q, k, v, attn = self.q, self.k, self.v, self.attn
        n, _, length, _ = q.shape
        g = self.batched(grad_output).reshape(n * length, self.embed_dim)
        g = self.heads(self.out_proj.backward(g).reshape(n, length, self.embed_dim))  # (N, H, L, d)
        grad_attn = g @ v.transpose(0, 1, 3, 2)  # (N, H, L, S)
        grad_v = attn.transpose(0, 1, 3, 2) @ g  # (N, H, S, d)
        grad_scores = self.softmax_backward(grad_attn)
        grad_q = (grad_scores @ k) * self.scale
        grad_k = (grad_scores.transpose(0, 1, 3, 2) @ q) * self.scale
        grads = [self.merge(x) for x in (grad_q, grad_k, grad_v)]  # (N, T, E) each
        self.accumulate(grads)
        e = self.embed_dim
        w = self.in_proj_weight.data
        return tuple(self.unbatched(grad @ w[i * e:(i + 1) * e], like)
                     for i, (grad, like) in enumerate(zip(grads, self.like)))

    def softmax_backward(self, grad_attn):
        """dE/dscores from dE/dattn through the softmax over the keys."""
        attn = self.attn
        return attn * (grad_attn - (grad_attn * attn).sum(axis=-1, keepdims=True))

    def accumulate(self, grads):
        """Adds the input projection's gradients: per third, grad.T @ input (summed over N and T)."""
        e = self.embed_dim
        weight = [grad.reshape(-1, e).T @ x.reshape(-1, e) for grad, x in zip(grads, self.inputs)]
        self.in_proj_weight.accumulate(np.concatenate(weight, axis=0))
        if self.in_proj_bias is not None:
            self.in_proj_bias.accumulate(np.concatenate([grad.sum(axis=(0, 1)) for grad in grads]))

    def list_mask(self, x):
        """The attn_mask of self-attention in a layer list: the causal mask over x's positions, or None."""
        if not self.causal:
            return None
        return causal_mask(x.shape[1] if x.ndim == 3 and self.batch_first else x.shape[0])

    def forward_in_list(self, x):
        """Self-attention: forward(x, x, x, attn_mask = the causal mask when `causal`)'s output."""
        return self.forward(x, x, x, attn_mask=self.list_mask(x), need_weights=False)[0]

    def backward_in_list(self, grad_output):
        """The gradient with respect to x of forward_in_list: the sum of the query's, key's and value's."""
        grad_query, grad_key, grad_value = self.backward(grad_output)
        return grad_query + grad_key + grad_value
