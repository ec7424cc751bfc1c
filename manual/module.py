"""The base every manual module shares with torch.nn.Module (torch keeps it in torch/nn/modules/module.py)."""


class Module:
    """What every module shares with torch.nn.Module: `module(x)` calls `forward(x)`, and
    `parameters()` lists the trained parameters of `named_parameters()`."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self):
        return iter(())

    def parameters(self):
        """The trained parameters (requires_grad), the ones an optimizer gets. A frozen Parameter
        stands in for what torch keeps as a buffer (SharedBiasLinear's bias), so it is left out,
        as torch's parameters() leaves out buffers."""
        return [p for _, p in self.named_parameters() if p.requires_grad]
