"""The base every manual module shares with torch.nn.Module (torch keeps it in torch/nn/modules/module.py)."""


class Module:
    """What every module shares with torch.nn.Module:

        module(x)              forward(x): caches what backward needs, returns the output
        backward(grad_output)  returns grad_input; accumulates parameter gradients (Parameter.grad)
        named_parameters()     (name, Parameter), torch's state-dict names, children's prefixed
        named_buffers()        (name, ndarray): running statistics and the like (torch's buffers)
        named_children()       (name, Module): the submodules whose names prefix their own
        train(mode) / eval()   the `training` flag, set on every submodule (dropout, batch norm)
        state_dict()           {name: array}: parameters and buffers, copies, as torch's

    A module with submodules lists them in `named_children` (a container or a residual block), and
    the names of their parameters and buffers come prefixed (`0.weight`, `body.1.running_mean`)."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward_in_list(self, x):
        """The output a layer list (Sequential) passes on, from its one input. torch's nn.Sequential
        passes module(x) on; a module whose torch forward takes several inputs or returns a tuple
        (an LSTM's (output, (h_n, c_n)), MultiheadAttention's query, key and value) says here which
        part a list uses. Default: forward(x)."""
        return self.forward(x)

    def backward_in_list(self, grad_output):
        """The gradient with respect to forward_in_list's input. Default: backward(grad_output)."""
        return self.backward(grad_output)

    def named_children(self):
        return iter(())

    def named_parameters(self, prefix=""):
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def named_buffers(self, prefix=""):
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def parameters(self):
        """The trained parameters (requires_grad), the ones an optimizer gets. A frozen Parameter
        stands in for what torch keeps as a buffer (SharedBiasLinear's bias), so it is left out,
        as torch's parameters() leaves out buffers."""
        return [p for _, p in self.named_parameters() if p.requires_grad]

    def train(self, mode=True):
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """Parameters and buffers by torch's names, copied, in torch's order: module by module, each
        module's parameters, then its buffers."""
        return {name: value.copy() for name, value in self.named_state()}

    def named_state(self, prefix=""):
        """(name, array) of state_dict, in its order, not copied."""
        children = list(self.named_children())
        if children:
            for name, child in children:
                yield from child.named_state(f"{prefix}{name}.")
            return
        yield from ((name, p.data) for name, p in self.named_parameters(prefix))
        yield from self.named_buffers(prefix)
