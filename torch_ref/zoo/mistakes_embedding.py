"""The zoo's classic mistake in an Embedding: the padding row receiving a gradient (torch's
padding_idx row never does, so it stays the zero vector it was initialised to).

It runs on `copy_padded`: the copy task, whose blank token (id 0) is the padding, an Embedding with
padding_idx = 0 and a Linear over every position; blanks fill most of every sequence, so the mistake
shows at iteration 0, stage grad, layers.0.weight, row 0. A plug-in factory by its name here:
`backprop-check run ... --impl torch_ref.zoo.mistakes_embedding:EmbeddingPaddingGetsGradient`.
"""
import numpy as np

import manual.embedding
from ..description import spec
from .faulty import Mistake
from .mistakes_layers import CHECKS, remember_input

COPY_PADDED = {
    "network": {"input_shape": [12], "loss": "cross_entropy", "layers": [
        {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 6, "padding_idx": 0},
        {"type": "Linear", "out_features": 10}]},
    "init": {"seed": 5}, "optimizer": {"name": "sgd", "lr": 0.1},
    "data": {"sequence": {"name": "copy", "n": 16, "length": 12, "symbols": 8, "string": 4, "seed": 1},
             "batch_size": 8},
    "run": {"steps": 3},
}


def copy_padded(steps=3):
    """the copy task (blank = padding_idx 0) → Embedding(10, 6, padding_idx=0) → Linear(6, 10), cross-entropy over every time step

    `steps` iterations (3 by default)."""
    return spec.parse({**COPY_PADDED, "run": {"steps": steps}})


def padding_row_gets_gradient(self, grad_output):
    """The weight's gradient scattered onto every looked-up row, the padding row too."""
    ids, d = np.asarray(self.seen_input).reshape(-1), self.weight.data.shape[1]
    grad = np.zeros_like(self.weight.data)
    np.add.at(grad, ids, grad_output.reshape(-1, d))
    self.weight.accumulate(grad)
    return None


EmbeddingPaddingGetsGradient = Mistake(
    "embedding-padding-gets-gradient", "The Embedding's padding row receives a gradient (the scatter-add of "
    "grad_output onto the looked-up rows without zeroing row padding_idx), so the padding vector is trained.",
    {(manual.embedding.Embedding, "forward"): remember_input,
     (manual.embedding.Embedding, "backward"): padding_row_gets_gradient}, copy_padded,
    "grad", "layers.0.weight", needs={"module": ("Embedding",)}, zoo=True, checks=CHECKS)

EMBEDDING_ZOO = [EmbeddingPaddingGetsGradient]
