"""What the description adds to torch's loss, in torch ops so autograd differentiates it:
reduction = "batch-mean" (the loss with "sum", divided by the batch's N) and the [penalty]
section ((λ₂/2)·Σθ² + λ₁·Σ|θ| over the chosen parameters; d|θ|/dθ is torch's sign(θ), 0 at 0)."""
from torch import nn


class BatchMean(nn.Module):
    """loss(input, target) / N, N = input.shape[0] (the loss made with reduction="sum")."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, input, target):
        return self.loss(input, target) / input.shape[0]


class Penalized(nn.Module):
    """loss(input, target) + (l2/2)·Σθ² + l1·Σ|θ| over `params` (tensors)."""

    def __init__(self, loss, params, l1=0.0, l2=0.0):
        super().__init__()
        self.loss, self.params, self.l1, self.l2 = loss, list(params), l1, l2

    def forward(self, input, target):
        total = self.loss(input, target)
        for p in self.params:
            if self.l2:
                total = total + 0.5 * self.l2 * (p * p).sum()
            if self.l1:
                total = total + self.l1 * p.abs().sum()
        return total


def param_groups(groups, params):
    """torch.optim's `params` argument for the description's groups ({"params": names, argument...}):
    [{"params": [tensor, ...], argument...}, ...]; betas as torch's tuple."""
    out = []
    for g in groups:
        group = {k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
        group["params"] = [params[n] for n in g["params"]]
        out.append(group)
    return out
