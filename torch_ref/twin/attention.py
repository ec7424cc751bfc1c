"""The twin's attention modules: torch's own classes, used in a layer list as self-attention.

In an nn.Sequential a module gets one input and passes one output on, so these subclasses of
torch.nn.MultiheadAttention and torch.nn.TransformerEncoderLayer take `causal` (this project's
argument) and their forward(x) is torch's own forward on x with the causal mask when `causal`:

    MultiheadAttention:       forward(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)[0]
    TransformerEncoderLayer:  forward(x, src_mask=mask)

The parameter names stay torch's (`layers.1.in_proj_weight`, `layers.3.self_attn.out_proj.weight`).
Each keeps the attention weights after softmax of its last forward, per head, as
`states = {"attn": (N, num_heads, T, T)}`, the manual modules' key (manual/attention.py).

torch has a fused "fast path" for both classes in eval mode (and for MultiheadAttention without
gradients); these run torch's regular path always (torch.backends.mha's switch, off during their
forward), the same computation as in training, so that a check in eval mode compares the
function itself and the weights are there to keep.
"""
from contextlib import contextmanager

import torch
from torch import nn

SELF_ATTENTION = ("MultiheadAttention", "TransformerEncoderLayer")  # the classes here, torch's names


@contextmanager
def regular_path():
    """torch's fused attention fast path switched off (torch.backends.mha), restored after."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def causal_mask(size, device=None):
    """The boolean causal mask (True above the diagonal: not allowed), torch's
    nn.Transformer.generate_square_subsequent_mask as booleans."""
    return torch.triu(torch.ones(size, size, dtype=torch.bool, device=device), diagonal=1)


def sequence_length(x, batch_first):
    """The number of positions of x: (N, T, E) with batch_first, (T, N, E) without, (T, E) unbatched."""
    return x.shape[1] if x.dim() == 3 and batch_first else x.shape[0]


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose forward(x) is self-attention (with the causal mask when
    `causal`), keeping the per-head weights as states["attn"]."""

    def __init__(self, *args, causal=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.causal, self.states = causal, {}

    def forward(self, x):
        mask = causal_mask(sequence_length(x, self.batch_first), x.device) if self.causal else None
        with regular_path():
            out, weights = super().forward(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
        self.states = {"attn": weights if weights.dim() == 4 else weights.unsqueeze(0)}
        return out


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer whose forward(x) is torch's with src_mask the causal mask when
    `causal`, keeping its attention's per-head weights as states["attn"] (its _sa_block asks
    self_attn for them; the output is the same)."""

    def __init__(self, *args, causal=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.causal, self.states = causal, {}

    def forward(self, x):
        mask = causal_mask(sequence_length(x, self.self_attn.batch_first), x.device) if self.causal else None
        with regular_path():
            return super().forward(x, src_mask=mask)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        """torch's _sa_block, the weights asked for too (need_weights=True, per head) and kept."""
        out, weights = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                      need_weights=True, average_attn_weights=False, is_causal=is_causal)
        self.states = {"attn": weights if weights.dim() == 4 else weights.unsqueeze(0)}
        return self.dropout1(out)


SELF_ATTENTION_CLASSES = (MultiheadAttention, TransformerEncoderLayer)  # (they keep states["attn"])
