"""A lookup table of vectors in numpy, as torch.nn.Embedding (torch/nn/modules/sparse.py), and the
loss over every time step of a sequence (`TimeSteps`).

    y = weight[x]                 x: integer token ids, any shape (N, T)    y: (N, T, embedding_dim)
    grad_weight[v] = Σ_{positions p with x_p = v} grad_y[p]      (÷ count(v) with scale_grad_by_freq)
    grad_weight[padding_idx] = 0  the padding row gets no gradient (torch's embedding_backward)

The input is integers and has no gradient: backward returns None, as autograd gives none for an
integer tensor. The sum over positions is one scatter-add (np.add.at), no Python loop over tokens.
"""
import numpy as np

from .module import Module
from .modules import Parameter


def _check_device(device):
    if device not in (None, "cpu"):
        raise ValueError(f"manual arrays live in numpy on the CPU: device must be None or 'cpu', got {device!r}")


def normalised_padding_idx(padding_idx, num_embeddings):
    """torch's check and normalisation: None, or an index in [0, num_embeddings); a negative one
    counts from the end (−1 is the last row)."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx must be within num_embeddings = {num_embeddings}, got {padding_idx}")
    return padding_idx % num_embeddings


class Embedding(Module):
    """torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
    norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
    dtype=None).

    weight (num_embeddings, embedding_dim); manual.init draws it N(0, 1) with the padding row zero,
    as torch's reset_parameters (here it starts at zero, as every manual module's parameters).
    padding_idx: its row is looked up like any other and never receives a gradient (a negative one
    counts from the end, as torch's). scale_grad_by_freq: each row's gradient divided by how often
    its token occurs in the batch, as torch's. Not offered: max_norm (torch renormalises the
    looked-up rows in place during forward) and sparse (a sparse gradient): both must keep torch's
    default. _weight: the initial weight (copied), _freeze: not trained, as torch's (what
    Embedding.from_pretrained passes). dtype: None is float64 (torch's default is float32).
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        _check_device(device)
        if max_norm is not None:
            raise ValueError("max_norm is not offered: torch renormalises the looked-up rows of the weight in place"
                             " during forward; give max_norm = None")
        if sparse:
            raise ValueError("sparse gradients are not offered; give sparse = false")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = normalised_padding_idx(padding_idx, num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        shape, dtype = (num_embeddings, embedding_dim), np.float64 if dtype is None else dtype
        if _weight is not None and np.shape(_weight) != shape:
            raise ValueError(f"Shape of weight does not match num_embeddings and embedding_dim: {np.shape(_weight)}")
        data = np.zeros(shape, dtype) if _weight is None else np.array(_weight, dtype)
        self.weight = Parameter(data, requires_grad=not _freeze)

    def forward(self, input):
        """weight[input]: (*input.shape, embedding_dim). `input` must be integers in
        [0, num_embeddings) (torch: a float input is refused, an id out of range an IndexError)."""
        input = np.asarray(input)
        if input.dtype.kind not in "iu":
            raise TypeError(f"Embedding takes integer token ids, got an array of {input.dtype}")
        if input.size and (input.min() < 0 or input.max() >= self.num_embeddings):
            bad = input.min() if input.min() < 0 else input.max()
            raise IndexError(f"Embedding: token id {int(bad)} is out of range for num_embeddings = {self.num_embeddings}")
        self.input = input
        return self.weight.data[input]

    def backward(self, grad_output, input_grad=True):
        """Accumulates grad_weight (the scatter-add of grad_output's rows onto their tokens' rows);
        returns None: integer token ids have no gradient."""
        if not self.weight.requires_grad:  # _freeze: no gradient at all
            return None
        ids = self.input.reshape(-1)
        rows = grad_output.reshape(-1, self.embedding_dim)
        grad = np.zeros_like(self.weight.data)
        np.add.at(grad, ids, rows)
        if self.scale_grad_by_freq:
            counts = np.bincount(ids, minlength=self.num_embeddings)
            grad /= np.maximum(counts, 1).astype(grad.dtype)[:, None]
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        self.weight.accumulate(grad)
        return None

    def named_parameters(self, prefix=""):
        yield f"{prefix}weight", self.weight


class TimeSteps:
    """A loss over every time step: output (N, T, C) and class-index targets (N, T), the loss of
    the N·T positions as N·T samples, output.reshape(−1, C) and target.reshape(−1), as nanoGPT's
    `F.cross_entropy(logits.view(-1, C), targets.view(-1))`; backward reshapes the gradient back
    to (N, T, C). The mean of a "mean" reduction is over all N·T positions, torch's convention for
    (N, C, T) inputs (the twin computes that form: loss(output.transpose(1, 2), target)).
    An output of two axes is passed through unchanged."""

    def __init__(self, loss):
        self.loss, self.shape = loss, None

    def forward(self, output, target):
        self.shape = output.shape if output.ndim == 3 else None
        if self.shape is not None:
            output, target = output.reshape(-1, output.shape[-1]), np.asarray(target).reshape(-1)
        return self.loss.forward(output, target)

    def backward(self):
        grad = self.loss.backward()
        return grad if self.shape is None else grad.reshape(self.shape)
