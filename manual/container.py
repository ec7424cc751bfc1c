"""Containers in numpy: Sequential, as torch.nn.Sequential (torch keeps it in
torch/nn/modules/container.py), and Residual, the block x + body(x) (torch has no class for it).

Both name their children as torch's state dict does (`0.weight`, `body.1.running_mean`), through
Module's prefixing. Sequential keeps every module's output and, after backward, the gradient with
respect to it, so that the lockstep can compare both module by module.
"""
import functools
import inspect
from collections import OrderedDict

from .module import Module


class Sequential(Module):
    """torch.nn.Sequential(*args): the modules, or one OrderedDict of name -> module, as torch's.

    (each module through its forward_in_list / backward_in_list: one array in, one out)
        forward:   y_0 = m_0(x),  y_i = m_i(y_{i−1}),  y = y_{k−1}            outputs[i] = y_i
        backward:  g_{k−1} = grad_y,  g_{i−1} = m_i.backward(g_i),  grad_x = m_0.backward(g_0)
                                                                             grad_outputs[i] = g_i = dE/dy_i

    outputs[i] is a reference to module i's output (not a copy: an in-place module after it, such
    as Dropout(inplace=True), changes it, as in torch). Children are named "0", "1", ... (or the
    OrderedDict's keys); `seq[i]` is a module, `seq[a:b]` a Sequential keeping the names, len(seq)
    the number of modules, as torch's.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            self._modules = OrderedDict(args[0])
        else:
            self._modules = OrderedDict((str(i), m) for i, m in enumerate(args))
        for name, m in self._modules.items():
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: module {name} is a {type(m).__name__}, not a manual Module")
        self.outputs = [None] * len(self._modules)
        self.grad_outputs = [None] * len(self._modules)

    def named_children(self):
        return iter(self._modules.items())

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return type(self)(OrderedDict(items[index]))
        return items[index][1]

    def forward(self, x):
        for i, m in enumerate(self._modules.values()):
            x = self.outputs[i] = m.forward_in_list(x)
        return x

    def backward(self, grad_output, input_grad=True):
        """Returns grad_x; with `input_grad` False, None, and a first module that can skip its
        grad_input (Linear, the convolutions: `backward(g, input_grad=False)`) skips it, as
        autograd does for an input that needs no gradient (a third of a first conv's work)."""
        modules = list(self._modules.values())
        for i in reversed(range(len(modules))):
            self.grad_outputs[i] = grad_output
            if i == 0 and not input_grad:
                if takes_input_grad(type(modules[0])):
                    modules[0].backward(grad_output, input_grad=False)
                else:
                    modules[0].backward(grad_output)
                return None
            grad_output = modules[i].backward_in_list(grad_output)
        return grad_output


@functools.lru_cache(maxsize=None)
def takes_input_grad(cls):
    """Whether cls.backward takes `input_grad` (asked once per class: the answer never changes, and
    inspect.signature costs more than a small module's backward)."""
    return "input_grad" in inspect.signature(cls.backward).parameters


class Residual(Module):
    """A residual block, Residual(*modules) or Residual(body): the output is x + body(x).

        y = x + body(x)          body: a Sequential, the child "body" (names read `body.0.weight`)
        grad_x = grad_y + body.backward(grad_y)

    body(x) must have x's shape. The modules are wrapped in a Sequential (a Sequential given alone
    is the body itself); torch has no such class: its twin is a module with
    `self.body = nn.Sequential(...)` whose forward is x + self.body(x).
    """

    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], Sequential):
            self.body = modules[0]
        else:
            self.body = Sequential(*modules)

    def named_children(self):
        yield "body", self.body

    def forward(self, x):
        out = self.body(x)
        if out.shape != x.shape:
            raise ValueError(f"Residual: the body maps shape {list(x.shape)} to {list(out.shape)}; "
                             "x + body(x) needs the same shape")
        return x + out

    def backward(self, grad_output):
        return grad_output + self.body.backward(grad_output)
