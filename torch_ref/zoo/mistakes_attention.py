"""The classic mistakes of attention, as subclasses of manual's MultiheadAttention
(manual/attention.py), each overriding the one method its mistake is in:

    AttentionUnscaled          the scores q·k without the 1/√d (forward and backward alike)
    SoftmaxOverQueries         softmax over the queries (axis −2), not the keys (its backward too)
    CausalMaskSeesNext         the causal mask shifted right: position i also sees i + 1
    CausalMaskHidesItself      the causal mask shifted left: position i does not see itself (row 0
                               sees nothing: NaN, as torch gives for a fully masked row)

Each changes the attention weights after softmax, the module's states["attn"], which the lockstep
compares (stage forward, just before the module's output) as `layers.0.attn`, placed at the first
query that goes wrong, worded "attn at query 1, key 0, head 0, sample 2" (lockstep/states.py's
locate_attention): the scale missing shows first at query 1 (query 0 sees only itself, weight 1
either way), the mask that sees the next position at query 0, key 1, the one hiding each
position from itself at query 0, key 0 (NaN), softmax over the queries at query 0. `ATTENTION_ZOO` holds them as registry entries (torch_ref/zoo/faulty.py's
Mistake) on a small causal self-attention network, in torch_ref/zoo/mistakes.py's ZOO (the zoo
command's list). Each is a plug-in factory too, e.g.
`--impl torch_ref.zoo.mistakes_attention:CausalMaskOffByOne`.
"""
import numpy as np

from manual.attention import MultiheadAttention
from ..description import spec
from .faulty import Mistake

CHECKS = (("float64", "free"), ("float32", "resync"))


class AttentionUnscaled(MultiheadAttention):
    """The scores q·kᵀ without the factor 1/√d (d = embed_dim / num_heads)."""

    def scaling(self):
        return 1.0


class SoftmaxOverQueries(MultiheadAttention):
    """softmax(scores) over the queries (axis −2): each key's column sums to 1, not each query's row."""

    def softmax(self, scores):
        with np.errstate(invalid="ignore"):
            z = np.exp(scores - scores.max(axis=-2, keepdims=True))
            return z / z.sum(axis=-2, keepdims=True)

    def softmax_backward(self, grad_attn):
        attn = self.attn
        return attn * (grad_attn - (grad_attn * attn).sum(axis=-2, keepdims=True))


class CausalMaskSeesNext(MultiheadAttention):
    """The causal mask one off to the right (np.triu(·, k=2)): position i sees i + 1 too."""

    def list_mask(self, x):
        mask = MultiheadAttention.list_mask(self, x)  # (not super(): the registry plants the method alone)
        return None if mask is None else np.triu(np.ones_like(mask), k=2)


class CausalMaskHidesItself(MultiheadAttention):
    """The causal mask one off to the left (np.triu(·, k=0)): position i does not see itself."""

    def list_mask(self, x):
        mask = MultiheadAttention.list_mask(self, x)  # (not super(): the registry plants the method alone)
        return None if mask is None else np.triu(np.ones_like(mask), k=0)


def causal_attention(steps=2):
    """5 positions × 8 features → causal MultiheadAttention (2 heads) → Flatten → Linear → cross-entropy"""
    return spec.parse({
        "network": {"input_shape": [5, 8], "loss": "cross_entropy", "layers": [
            {"type": "MultiheadAttention", "num_heads": 2, "batch_first": True, "causal": True},
            {"type": "Flatten"}, {"type": "Linear", "out_features": 3}]},
        "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": 8, "seed": 1}, "batch_size": 4}, "run": {"steps": steps, "dtype": "float64"},
    })


def in_zoo(id, what, cls, methods, at):
    """A layer-zoo entry planting `cls`'s `methods` into the network's MultiheadAttention, caught at
    the forward stage, in its attention weights (layers.0.attn), at `at` (the start of the wording)."""
    replaces = {(MultiheadAttention, name): getattr(cls, name) for name in methods}
    return Mistake(id, what, replaces, causal_attention, "forward", "layers.0.attn",
                   needs={"module": ("MultiheadAttention",)}, zoo=True, checks=CHECKS, at=at)


AttentionScaleMissing = in_zoo(
    "attention-scale-missing", "The attention scores q·kᵀ not divided by √d (d the head's size): softmax of "
    "scores √d times too large.", AttentionUnscaled, ("scaling",), "attn at query 1, key 0,")
AttentionSoftmaxOverQueries = in_zoo(
    "attention-softmax-over-queries", "The attention's softmax over the queries (axis −2) instead of the keys: "
    "each key's column sums to 1, not each query's row.", SoftmaxOverQueries, ("softmax", "softmax_backward"),
    "attn at query 0, key 0,")
CausalMaskOffByOne = in_zoo(
    "causal-mask-off-by-one", "The causal mask one position off: np.triu(ones, k=2) where k=1 is due, so each "
    "position also sees the next one.", CausalMaskSeesNext, ("list_mask",), "attn at query 0, key 1,")
CausalMaskExcludesSelf = in_zoo(
    "causal-mask-excludes-self", "The causal mask one position off the other way: np.triu(ones, k=0), so a "
    "position does not see itself (and the first sees nothing: NaN).", CausalMaskHidesItself, ("list_mask",),
    "attn at query 0, key 0,")

ATTENTION_ZOO = [AttentionScaleMissing, AttentionSoftmaxOverQueries, CausalMaskOffByOne, CausalMaskExcludesSelf]
MISTAKE_CLASSES = (AttentionUnscaled, SoftmaxOverQueries, CausalMaskSeesNext, CausalMaskHidesItself)
