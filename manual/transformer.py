"""The transformer encoder layer in numpy, as torch.nn.TransformerEncoderLayer (torch keeps it in
torch/nn/modules/transformer.py), built from manual's MultiheadAttention, Linear, LayerNorm,
activations and Dropout, children named as torch names them, so the state dict is torch's.

    sa(x) = dropout1(self_attn(x, x, x, src_mask, src_key_padding_mask)[0])
    ff(x) = dropout2(linear2(dropout(activation(linear1(x)))))
    norm_first=False (post-norm, torch's default):  h = norm1(x + sa(x));   y = norm2(h + ff(h))
    norm_first=True  (pre-norm):                    h = x + sa(norm1(x));   y = h + ff(norm2(h))

Backward runs the same graph in reverse, each residual's gradient the sum of its two branches'.
torch's eval-mode "fast path" (a fused kernel) computes the same function; the tests compare with
torch in training mode, its regular path.
"""
from .activations import GELU, ReLU
from .attention import MultiheadAttention, causal_mask
from .dropout import Dropout
from .module import Module
from .modules import Linear
from .normalization import LayerNorm, resolve_dtype

ACTIVATIONS = {"relu": ReLU, "gelu": GELU}


def linear_forward(linear, x):
    """A Linear on the last axis of x (any number of leading axes): manual's Linear takes (N, in)."""
    return linear.forward(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], linear.out_features)


def linear_backward(linear, grad_output):
    """The gradient of linear_forward's input (the leading axes restored)."""
    grad = linear.backward(grad_output.reshape(-1, grad_output.shape[-1]))
    return grad.reshape(*grad_output.shape[:-1], linear.in_features)


class TransformerEncoderLayer(Module):
    """torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-05, batch_first=False, norm_first=False, bias=True,
    device=None, dtype=None).

    Children as torch's: self_attn, linear1, dropout, linear2, norm1, norm2, dropout1, dropout2.
    activation: "relu" or "gelu" (torch also takes a callable; not here). dropout must be 0 (as
    MultiheadAttention's here: torch's 0.1 also drops attention weights, which no handed mask
    reaches); the module's default stays torch's 0.1, so give dropout=0.

    forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False) as torch's: src
    (T, N, E), (N, T, E) with batch_first, or (T, E); the masks as MultiheadAttention's attn_mask
    and key_padding_mask. backward(grad_output) -> grad_src. In a layer list (forward_in_list)
    src_mask is the causal mask when the attribute `causal` is true (a description's own argument,
    set by manual/layered.py; the constructor takes torch's only).
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-05,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        dtype = resolve_dtype(device, dtype)
        if activation not in ACTIVATIONS:
            raise ValueError(f"TransformerEncoderLayer: activation must be one of {list(ACTIVATIONS)}, "
                             f"got {activation!r}")
        if dropout != 0:
            raise ValueError(f"TransformerEncoderLayer: dropout = {dropout!r} is not supported (only 0: torch's "
                             "dropout also drops attention weights, which no handed mask reaches)")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = ACTIVATIONS[activation]()
        self.norm_first, self.batch_first = norm_first, batch_first
        self.causal = False  # a layer list's own argument (not torch's): set after construction

    def named_children(self):
        for name in ("self_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2"):
            yield name, getattr(self, name)

    @property
    def states(self):
        """The attention's states ({"attn": (N, H, T, T)}) after a forward."""
        return self.self_attn.states

    def sa_block(self, x, attn_mask, key_padding_mask):
        out = self.self_attn.forward(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                     need_weights=False)[0]
        return self.dropout1.forward(out)

    def sa_backward(self, grad_output):
        return sum(self.self_attn.backward(self.dropout1.backward(grad_output)))

    def ff_block(self, x):
        h = self.activation.forward(linear_forward(self.linear1, x))
        return self.dropout2.forward(linear_forward(self.linear2, self.dropout.forward(h)))

    def ff_backward(self, grad_output):
        g = self.dropout.backward(linear_backward(self.linear2, self.dropout2.backward(grad_output)))
        return linear_backward(self.linear1, self.activation.backward(g))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if is_causal and src_mask is None:
            raise ValueError("TransformerEncoderLayer: is_causal is a hint (as torch's): give the causal mask as "
                             "src_mask too")
        x = src
        if self.norm_first:
            x = x + self.sa_block(self.norm1.forward(x), src_mask, src_key_padding_mask)
            return x + self.ff_block(self.norm2.forward(x))
        x = self.norm1.forward(x + self.sa_block(x, src_mask, src_key_padding_mask))
        return self.norm2.forward(x + self.ff_block(x))

    def backward(self, grad_output):
        g = grad_output
        if self.norm_first:
            g = g + self.norm2.backward(self.ff_backward(g))
            return g + self.norm1.backward(self.sa_backward(g))
        g = self.norm2.backward(g)
        g = self.norm1.backward(g + self.ff_backward(g))
        return g + self.sa_backward(g)

    def forward_in_list(self, x):
        """forward(x, src_mask = the causal mask when `causal`)."""
        mask = None
        if self.causal:
            mask = causal_mask(x.shape[1] if x.ndim == 3 and self.batch_first else x.shape[0])
        return self.forward(x, src_mask=mask)

