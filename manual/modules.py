"""Layers of a multilayer perceptron in numpy, named and shaped as in torch.nn.

Every module has `forward(x)`, which caches exactly what its backward needs, and
`backward(grad_output)`, which returns `grad_input` and accumulates parameter
gradients into `Parameter.grad` with `+=` (so `zero_grad()` means what it means in torch).
All arrays are batched: the first axis is the batch, N.
"""
import numpy as np


class Parameter:
    """A numpy array with a gradient beside it. `data` is updated in place by the optimizer."""

    def __init__(self, data, requires_grad=True):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = np.zeros_like(data) if requires_grad else None

    def zero_grad(self):
        if self.grad is not None:
            self.grad.fill(0)


class Linear:
    """A fully connected layer, as torch.nn.Linear.

        y = x @ W.T + b          x: (N, in)  W: (out, in)  b: (out,), () or none  y: (N, out)
        grad_W = grad_y.T @ x    (out, in)
        grad_b = grad_y.sum(0)   (out,)     per-neuron bias only
        grad_x = grad_y @ W      (N, in)

    bias: "per-neuron" (torch's, trained), "shared-frozen" (the seed's: one scalar added to
    every neuron of the layer, never updated, so it has no gradient), or "none".
    """

    def __init__(self, in_features, out_features, bias="per-neuron", dtype=np.float64):
        self.in_features, self.out_features, self.bias_mode = in_features, out_features, bias
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        if bias == "per-neuron":
            self.bias = Parameter(np.zeros(out_features, dtype))
        elif bias == "shared-frozen":
            self.bias = Parameter(np.zeros((), dtype), requires_grad=False)
        else:
            self.bias = None

    def forward(self, x):
        self.x = x  # (N, in)
        y = x @ self.weight.data.T  # (N, out)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        self.weight.grad += grad_output.T @ self.x  # (out, in)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += grad_output.sum(axis=0)  # (out,)
        return grad_output @ self.weight.data  # (N, in)

    def named_parameters(self):
        yield "weight", self.weight
        if self.bias is not None:
            yield "bias", self.bias


class Sigmoid:
    """out = 1 / (1 + exp(-x));  grad_x = grad_out * out * (1 - out).  Saves its output.

    Evaluated as exp(-|x|) so that neither branch overflows for large |x|.
    """

    def forward(self, x):
        e = np.exp(-np.abs(x))
        self.out = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return self.out

    def backward(self, grad_output):
        return grad_output * self.out * (1.0 - self.out)


class Tanh:
    """out = tanh(x);  grad_x = grad_out * (1 - out²).  Saves its output."""

    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * (1.0 - self.out * self.out)


class ReLU:
    """out = max(x, 0);  grad_x = grad_out * [x > 0]  (torch's subgradient at 0 is 0)."""

    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, 0.0)  # (N, features), x's dtype

    def backward(self, grad_output):
        return np.where(self.mask, grad_output, 0.0)


class Identity:
    """out = x;  grad_x = grad_out."""

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity}


class MLP:
    """Linear → activation, repeated: layer k maps sizes[k] to sizes[k+1].

        net_k = a_{k-1} @ W_k.T + b_k      (N, sizes[k+1])     a_{-1} = x
        a_k   = f_k(net_k)
        delta_k = dE/dnet_k = f_k'(net_k) * (delta_{k+1} @ W_{k+1})   chain rule, (N, sizes[k+1])

    Parameter names are torch's state_dict keys: `layers.{k}.weight`, `layers.{k}.bias`.
    """

    def __init__(self, sizes, activations, bias="per-neuron", dtype=np.float64):
        self.layers = [Linear(i, o, bias, dtype) for i, o in zip(sizes[:-1], sizes[1:])]
        self.activations = [ACTIVATIONS[name]() for name in activations]
        self.deltas = [None] * len(self.layers)

    def forward(self, x):
        for layer, act in zip(self.layers, self.activations):
            x = act.forward(layer.forward(x))
        return x

    def backward(self, grad_output):
        for k in reversed(range(len(self.layers))):
            self.deltas[k] = self.activations[k].backward(grad_output)
            grad_output = self.layers[k].backward(self.deltas[k])
        return grad_output

    def named_parameters(self):
        """Every parameter, trained or frozen, under its state_dict name."""
        for k, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                yield f"layers.{k}.{name}", p

    def parameters(self):
        """The trained parameters, the ones an optimizer gets."""
        return [p for _, p in self.named_parameters() if p.requires_grad]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()
