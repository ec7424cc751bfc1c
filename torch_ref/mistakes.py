"""The classic backprop mistakes, each a faulty implementation behind the plug-in interface: the
manual engine (`manual.trainer.Trainer`) with one component swapped for a faulty one, nothing else
changed (the real engine is never touched). `Faulty` unchanged is the correct algorithm, the zoo's
control. torch_ref/zoo.py says where each must be caught and runs them."""
import numpy as np

import manual.activations
import manual.losses
import manual.modules
import manual.optim
import manual.trainer


# --- the correct algorithm, in the steps a mistake replaces ---------------------------------------

class Faulty(manual.trainer.Trainer):
    """The manual engine's training step written out as four steps (zero_grad, forward, backward,
    update), each of which an entry may replace; gradient clipping and the learning-rate schedule
    are the engine's own. Unchanged, it is the correct algorithm (the zoo's control, tested as such)."""

    def __init__(self, desc):
        super().__init__(desc)
        self.reported = list(self.trained)  # the description's trained parameters: the grads reported
        self.lr = desc["optimizer"].get("lr")
        self.setup(desc)
        self.params = dict(self.model.named_parameters())
        self.trained = [name for name, p in self.params.items() if p.requires_grad]

    def setup(self, desc):
        """Swap components here."""

    def zero_grad(self):
        self.optimizer.zero_grad()

    def backward(self, grad_output):
        self.model.backward(grad_output)

    def update(self):
        self.optimizer_step()  # the optimizer's step, then the schedule's

    def train_step(self, x, y):
        self.zero_grad()
        output = self.model.forward(x)
        loss = self.loss_fn.forward(output, y)
        self.backward(self.loss_fn.backward())
        self.clip_grads()
        result = {
            "output": output,
            "loss": float(loss),
            "deltas": {f"layers.{k}": d for k, d in enumerate(self.model.deltas)},
            "grads": {n: self.params[n].grad.copy() for n in self.reported},
        }
        self.update()
        result["optimizer_state"] = self.optimizer_state()
        result["state_dict"] = self.state_dict()
        return result

    def step(self, x, y):
        """The same iteration with nothing copied out (the worked example's long run)."""
        self.zero_grad()
        loss = self.loss_fn.forward(self.model.forward(x), y)
        self.backward(self.loss_fn.backward())
        self.clip_grads()
        self.update()
        return float(loss)


def _replace_activations(model, name, cls):
    model.activations = [cls() if type(a).__name__ == name else a for a in model.activations]


def _replace_linears(model, cls, first=0):
    """Layers k >= first become `cls` (a faulty Linear): the same data and parameters, faulty
    methods. A SharedBiasLinear keeps its frozen 0-d bias: cls's backward trains no frozen bias."""
    for k in range(first, len(model.layers)):
        old = model.layers[k]
        old.__class__ = cls  # same data and parameters, faulty methods


# --- the mistakes ---------------------------------------------------------------------------------

class LossGradSign(Faulty):
    """dE/dout = target − out: the derivative of ½(target − out)² with its sign lost."""

    def setup(self, desc):
        base = type(self.loss_fn)

        class Flipped(base):
            def backward(self):
                return -base.backward(self)

        self.loss_fn.__class__ = Flipped


class ActivationDerivativeDropped(Faulty):
    """delta = dE/dout: the chain rule stops before the activation (f′ left out)."""

    def setup(self, desc):
        class NoDerivative(manual.activations.Sigmoid):
            def backward(self, grad_output):
                return grad_output

        _replace_activations(self.model, "Sigmoid", NoDerivative)


class SigmoidDerivativeOnNet(Faulty):
    """σ′ evaluated on the pre-activation: net·(1 − net) instead of out·(1 − out)."""

    def setup(self, desc):
        class OnNet(manual.activations.Sigmoid):
            def forward(self, x):
                self.net = x
                return super().forward(x)

            def backward(self, grad_output):
                return grad_output * self.net * (1.0 - self.net)

        _replace_activations(self.model, "Sigmoid", OnNet)


class TransposedLinear(manual.modules.Linear):
    def backward(self, grad_output, input_grad=True):
        # x.T @ delta is (in, out), written for a (in, out) weight; square layers hide the shape.
        self.weight.accumulate((self.x.T @ grad_output).reshape(self.weight.data.shape))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(grad_output.sum(axis=0))
        return grad_output @ self.weight.data


class WeightGradTransposed(Faulty):
    """grad_W = x.T @ delta, (in, out): the transpose of (out, in), unnoticed on square layers."""

    def setup(self, desc):
        _replace_linears(self.model, TransposedLinear)


class FirstOutputOnlyLinear(manual.modules.Linear):
    def backward(self, grad_output, input_grad=True):
        self.weight.accumulate(grad_output.T @ self.x)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(grad_output.sum(axis=0))
        return grad_output[:, :1] @ self.weight.data[:1, :]  # Σ over one output neuron only


class HiddenErrorOneOutput(Faulty):
    """The hidden error dE/dout_h summed over the first output neuron only, not over all of them."""

    def setup(self, desc):
        _replace_linears(self.model, FirstOutputOnlyLinear, first=1)


class HiddenErrorThroughUpdatedWeights(Faulty):
    """Each layer is updated as soon as its gradient is known, and the error is then passed back
    through the layer's new weights instead of the ones the forward pass used (plain SGD)."""

    def backward(self, grad_output):
        model = self.model
        for k in reversed(range(len(model.layers))):
            layer = model.layers[k]
            model.deltas[k] = model.activations[k].backward(grad_output)
            layer.weight.accumulate(model.deltas[k].T @ layer.x)
            if layer.bias is not None and layer.bias.requires_grad:
                layer.bias.accumulate(model.deltas[k].sum(axis=0))
            for _, p in layer.named_parameters():
                if p.requires_grad:
                    p.data -= self.lr * p.grad  # updated now ...
            grad_output = model.deltas[k] @ layer.weight.data  # ... and used here: too soon

    def update(self):
        pass  # done layer by layer in backward


class SharedBiasTrained(manual.modules.SharedBiasLinear):
    def backward(self, grad_output, input_grad=True):
        self.weight.accumulate(grad_output.T @ self.x)
        self.bias.accumulate(grad_output.sum())  # one scalar added to every neuron: Σ over batch and neurons
        return grad_output @ self.weight.data


class FrozenBiasUpdated(Faulty):
    """The shared bias, which the description freezes, is trained like a weight: b −= lr·Σ delta."""

    def setup(self, desc):
        for layer in self.model.layers:
            layer.bias = manual.modules.Parameter(layer.bias.data, requires_grad=True)
            layer.__class__ = SharedBiasTrained
        opt = dict(desc["optimizer"])
        params = [p for _, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = manual.optim.OPTIMIZERS[opt.pop("name")](params, **opt)


class MeanLossGradNotDividedByBatch(Faulty):
    """MSE averaged over the batch in the loss, but its gradient divided by the outputs C only: 2(out − t)/C, not 2(out − t)/(N·C)."""

    def setup(self, desc):
        class PerSampleGrad(manual.losses.MSELoss):
            def backward(self):
                return (2.0 / self.diff.shape[1]) * self.diff

        self.loss_fn = PerSampleGrad()


class LrAppliedTwice(Faulty):
    """The learning rate applied twice: p −= lr·(lr·grad), once when scaling the gradient and again in the step."""

    def update(self):
        for p in self.model.parameters():
            p.grad *= self.lr
        super().update()


class GradsNotZeroed(Faulty):
    """Gradients accumulated across iterations: zero_grad never called, so step t uses Σ of all gradients so far."""

    def zero_grad(self):
        pass


class OutputActivationMissing(Faulty):
    """The output layer's activation left out of the forward pass: the network outputs net_o (its
    backward still uses out·(1 − out), now of the unsquashed output)."""

    def setup(self, desc):
        class Forgotten(manual.activations.Sigmoid):
            def forward(self, x):
                self.out = x
                return x

        self.model.activations[-1] = Forgotten()


class LossMissingHalf(Faulty):
    """The loss reported as Σ(target − out)², while its gradient is that of Σ ½(target − out)²."""

    def setup(self, desc):
        class NoHalf(manual.losses.HalfSSELoss):
            def forward(self, input, target):
                return 2.0 * super().forward(input, target)

        self.loss_fn = NoHalf()


class MomentumRestarted(Faulty):
    """The momentum buffer restarted every step (made afresh inside the step), so b = g and momentum never builds up."""

    def update(self):
        for state in self.optimizer.state:
            state.clear()
        super().update()


def broken_adam(name, update, second_moment=lambda g: g * g):
    """An Adam step (no weight decay, no amsgrad) that keeps torch's moment bookkeeping and changes
    θ by `update(self, m, v, t)`: the shared body of every deliberately wrong Adam (here and in
    the tests), which differ only in their planted line."""
    def step(self):
        beta1, beta2 = self.betas
        for _, p, state, g in self._grads(self.weight_decay):
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
            state["step"] += 1
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * second_moment(g)
            p.data -= update(self, m, v, state["step"])
    step.__name__ = name
    return step


class NoBiasCorrectionAdam(manual.optim.Adam):
    # m and v used as they are: biased to 0 early
    step = broken_adam("no_bias_correction", lambda self, m, v, t: self.lr * m / (np.sqrt(v) + self.eps))


class AdamWithoutBiasCorrection(Faulty):
    """Adam without bias correction: θ −= lr·m/(√v + ε), not divided by 1 − β1^t and 1 − β2^t, so early steps are wrong."""

    def setup(self, desc):
        self.optimizer.__class__ = NoBiasCorrectionAdam


class CrossEntropyWithoutTarget(Faulty):
    """Softmax cross-entropy whose gradient forgets to subtract the one-hot target: softmax(x)/N, not (softmax(x) − onehot)/N."""

    def setup(self, desc):
        base = type(self.loss_fn)

        class Forgot(base):
            def backward(self):
                return self.p * (1.0 / len(self.t) if self.reduction == "mean" else 1.0)

        self.loss_fn.__class__ = Forgot


class BiasGradAveraged(manual.modules.Linear):
    def backward(self, grad_output, input_grad=True):
        self.weight.accumulate(grad_output.T @ self.x)
        self.bias.accumulate(grad_output.mean(axis=0))  # averaged where the loss already averages
        return grad_output @ self.weight.data


class BiasGradAveragedOverBatch(Faulty):
    """The per-neuron bias gradient averaged over the batch instead of summed (the loss has already averaged)."""

    def setup(self, desc):
        _replace_linears(self.model, BiasGradAveraged)
