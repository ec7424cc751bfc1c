"""The registry of planted mistakes: the classic backprop mistakes of the zoo (`backprop-check zoo`,
torch_ref/zoo/runner.py; the worked example's errata are explained with them) and the tests' planted bugs
(torch_ref/zoo/planted.py), each a `Mistake` (torch_ref/zoo/faulty.py): what it replaces in the manual
engine and with what faulty code, what it is, the description it runs on, where the lockstep must
catch it (iteration, stage, tensor) and in which dtypes and modes, and where it applies.

Each is built by planting it in the manual engine's builder (no live object is changed, the engine
itself is never touched), and each is a plug-in factory under its name here, e.g.
`backprop-check run worked_example --impl torch_ref.zoo.mistakes:GradsNotZeroed`. The engine without
the mistake, manual.trainer.build, is every mistake's control.

    REGISTRY        every mistake, zoo first (in the zoo's order), then the tests' planted bugs
    ZOO             the zoo's: the MLP's (here), then the layer lists' (torch_ref/zoo/mistakes_layers.py),
                    then the sequence modules' (mistakes_embedding.py, mistakes_rnn.py,
                    mistakes_attention.py)
    mistake(id)     one by id
    applicable(desc) the zoo's that apply to a description
"""
import numpy as np

import manual.activations
import manual.losses
import manual.modules
import manual.optim
import manual.trainer
from .faulty import (Mistake, adam, broken_adam, classifier, correct, minibatch, momentum, square,
                     worked)
from .planted import PLANTED
from .mistakes_layers import LAYER_ZOO
from .mistakes_embedding import EMBEDDING_ZOO
from .mistakes_rnn import RNN_ZOO
from .mistakes_attention import ATTENTION_ZOO

__all__ = ["REGISTRY", "ZOO", "applicable", "mistake", "broken_adam"]

# the runs that must catch a zoo mistake: float64, and float32 judged each step (resync) and free
ZOO_CHECKS = (("float64", "free"), ("float32", "resync"), ("float32", "free"))
SIGMOID = {"activation": ("sigmoid",)}
Linear, Sigmoid, Trainer = manual.modules.Linear, manual.activations.Sigmoid, manual.trainer.Trainer


def in_zoo(id, what, replaces, description, stage, tensor, **where):
    return Mistake(id, what, replaces, description, stage, tensor, zoo=True, checks=ZOO_CHECKS, **where)


# --- the faulty code ------------------------------------------------------------------------------

def loss_grad_sign(self):
    return -correct(self, "backward")()


def no_derivative(self, grad_output):
    return grad_output


def remember_net(self, x):
    self.net = x
    return correct(self, "forward")(x)


def derivative_of_net(self, grad_output):
    return grad_output * self.net * (1.0 - self.net)


def weight_grad_transposed(self, grad_output, input_grad=True):
    # x.T @ delta is (in, out), written for a (in, out) weight; square layers hide the shape.
    self.weight.accumulate((self.x.T @ grad_output).reshape(self.weight.data.shape))
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output @ self.weight.data if input_grad else None


def first_output_only(self, grad_output, input_grad=True):
    self.weight.accumulate(grad_output.T @ self.x)
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output[:, :1] @ self.weight.data[:1, :] if input_grad else None  # Σ over one output neuron only


def backward_updating_each_layer(self, x, y):
    """forward_backward with each layer updated (plain SGD) as soon as its gradient is known."""
    self.optimizer.zero_grad()
    output = self.model.forward(x)
    loss = self.loss_fn.forward(output, y)
    grad_output, model = self.loss_fn.backward(), self.model
    for k in reversed(range(len(model.layers))):
        layer = model.layers[k]
        model.deltas[k] = model.activations[k].backward(grad_output)
        layer.weight.accumulate(model.deltas[k].T @ layer.x)
        if layer.bias is not None and layer.bias.requires_grad:
            layer.bias.accumulate(model.deltas[k].sum(axis=0))
        for _, p in layer.named_parameters():
            if p.requires_grad:
                p.data -= self.optimizer.lr * p.grad  # updated now ...
        grad_output = model.deltas[k] @ layer.weight.data  # ... and used here: too soon
    self.clip_grads()
    return output, loss


def schedule_only(self):
    if self.scheduler is not None:  # the parameters were updated in backward
        self.scheduler.step()


def frozen_bias_stepped(self):
    for layer, delta in zip(self.model.layers, self.model.deltas):
        layer.bias.data -= self.optimizer.lr * delta.sum()  # Σ over batch and neurons, as a weight's gradient
    correct(self, "optimizer_step")()


def grad_per_sample(self):
    return (2.0 / self.diff.shape[1]) * self.diff


def lr_applied_twice(self):
    for p in self.params:
        if p.grad is not None:
            p.grad = p.grad * self.lr  # a new array: the gradients handed out keep their values
    correct(self, "step")()


def no_zero_grad(self, set_to_none=True):
    pass


def output_unsquashed(self, x):
    self.out = x
    return x


def loss_doubled(self, input, target):
    return 2.0 * correct(self, "forward")(input, target)


def momentum_restarted(self):
    for state in self.state:
        state.clear()
    correct(self, "step")()


# m and v used as they are: biased to 0 early
no_bias_correction = broken_adam("no_bias_correction", lambda self, m, v, t: self.lr * m / (np.sqrt(v) + self.eps))


def cross_entropy_without_target(self):
    return self.p * (1.0 / len(self.t) if self.reduction == "mean" else 1.0)


def bias_grad_averaged(self, grad_output, input_grad=True):
    self.weight.accumulate(grad_output.T @ self.x)
    self.bias.accumulate(grad_output.mean(axis=0))  # averaged where the loss already averages
    return grad_output @ self.weight.data if input_grad else None


# --- the zoo, in its order ------------------------------------------------------------------------

LossGradSign = in_zoo(
    "loss-grad-sign", "dE/dout = target − out: the derivative of ½(target − out)² with its sign lost.",
    {(manual.losses.Loss, "backward"): loss_grad_sign}, worked, "delta", "layers.1")
ActivationDerivativeDropped = in_zoo(
    "activation-derivative-dropped", "delta = dE/dout: the chain rule stops before the activation (f′ left out).",
    {(Sigmoid, "backward"): no_derivative}, worked, "delta", "layers.1", needs=SIGMOID)
SigmoidDerivativeOnNet = in_zoo(
    "sigmoid-derivative-on-net", "σ′ evaluated on the pre-activation: net·(1 − net) instead of out·(1 − out).",
    {(Sigmoid, "forward"): remember_net, (Sigmoid, "backward"): derivative_of_net}, worked, "delta", "layers.1",
    needs=SIGMOID)
HiddenErrorOneOutput = in_zoo(
    "hidden-error-one-output", "The hidden error dE/dout_h summed over the first output neuron only, not over "
    "all of them.", {(Linear, "backward"): first_output_only}, worked, "delta", "layers.0")
HiddenErrorThroughUpdatedWeights = in_zoo(
    "hidden-error-through-updated-weights", "Each layer is updated as soon as its gradient is known, and the "
    "error is then passed back through the layer's new weights instead of the ones the forward pass used "
    "(plain SGD).", {(Trainer, "forward_backward"): backward_updating_each_layer,
                     (Trainer, "optimizer_step"): schedule_only}, worked, "delta", "layers.0",
    needs={"optimizer": ("sgd",)})
MeanLossGradNotDividedByBatch = in_zoo(
    "mean-loss-grad-not-divided-by-batch", "MSE averaged over the batch in the loss, but its gradient divided "
    "by the outputs C only: 2(out − t)/C, not 2(out − t)/(N·C).",
    {(manual.losses.MSELoss, "backward"): grad_per_sample}, minibatch, "delta", "layers.1", needs={"loss": ("mse",)})
CrossEntropyWithoutTarget = in_zoo(
    "cross-entropy-without-target", "Softmax cross-entropy whose gradient forgets to subtract the one-hot "
    "target: softmax(x)/N, not (softmax(x) − onehot)/N.",
    {(manual.losses.CrossEntropyLoss, "backward"): cross_entropy_without_target}, classifier, "delta", "layers.1",
    needs={"loss": ("cross_entropy",)})
WeightGradTransposed = in_zoo(
    "weight-grad-transposed", "grad_W = x.T @ delta, (in, out): the transpose of (out, in), unnoticed on "
    "square layers.", {(Linear, "backward"): weight_grad_transposed}, square, "grad", "layers.1.weight")
BiasGradAveragedOverBatch = in_zoo(
    "bias-grad-averaged-over-batch", "The per-neuron bias gradient averaged over the batch instead of summed "
    "(the loss has already averaged).", {(Linear, "backward"): bias_grad_averaged}, minibatch, "grad",
    "layers.1.bias", needs={"bias": ("per-neuron",)})
GradsNotZeroed = in_zoo(
    "grads-not-zeroed", "Gradients accumulated across iterations: zero_grad never called, so step t uses Σ of "
    "all gradients so far.", {(manual.optim.Optimizer, "zero_grad"): no_zero_grad}, worked, "grad",
    "layers.1.weight", iteration=1)
OutputActivationMissing = in_zoo(
    "output-activation-missing", "The output layer's activation left out of the forward pass: the network "
    "outputs net_o (its backward still uses out·(1 − out), now of the unsquashed output).",
    {(Sigmoid, "forward", -1): output_unsquashed}, worked, "output", "output", needs=SIGMOID)
LossMissingHalf = in_zoo(
    "loss-missing-half", "The loss reported as Σ(target − out)², while its gradient is that of Σ ½(target − out)².",
    {(manual.losses.HalfSSELoss, "forward"): loss_doubled}, worked, "loss", "loss", needs={"loss": ("half-sse",)})
FrozenBiasUpdated = in_zoo(
    "frozen-bias-updated", "The shared bias, which the description freezes, is trained like a weight: "
    "b −= lr·Σ delta.", {(Trainer, "optimizer_step"): frozen_bias_stepped}, worked, "param", "layers.0.bias",
    needs={"bias": ("shared-frozen",)})
LrAppliedTwice = in_zoo(
    "lr-applied-twice", "The learning rate applied twice: p −= lr·(lr·grad), once when scaling the gradient and "
    "again in the step.", {(manual.optim.SGD, "step"): lr_applied_twice}, worked, "param", "layers.0.weight",
    needs={"optimizer": ("sgd",)})
MomentumRestarted = in_zoo(
    "momentum-buffer-restarted", "The momentum buffer restarted every step (made afresh inside the step), so "
    "b = g and momentum never builds up.", {(manual.optim.SGD, "step"): momentum_restarted}, momentum, "optim",
    "layers.0.weight.momentum_buffer", iteration=1, needs={"optimizer": ("sgd",), "momentum": True})
AdamWithoutBiasCorrection = in_zoo(
    "adam-without-bias-correction", "Adam without bias correction: θ −= lr·m/(√v + ε), not divided by 1 − β1^t "
    "and 1 − β2^t, so early steps are wrong.", {(manual.optim.Adam, "step"): no_bias_correction}, adam, "param",
    "layers.0.weight", needs={"optimizer": ("adam",)})

ZOO = [LossGradSign, ActivationDerivativeDropped, SigmoidDerivativeOnNet, HiddenErrorOneOutput,
       HiddenErrorThroughUpdatedWeights, MeanLossGradNotDividedByBatch, CrossEntropyWithoutTarget,
       WeightGradTransposed, BiasGradAveragedOverBatch, GradsNotZeroed, OutputActivationMissing, LossMissingHalf,
       FrozenBiasUpdated, LrAppliedTwice, MomentumRestarted, AdamWithoutBiasCorrection] + LAYER_ZOO + EMBEDDING_ZOO
ZOO += RNN_ZOO + ATTENTION_ZOO  # the sequence modules'
REGISTRY = ZOO + PLANTED


def applicable(desc):
    """The zoo's mistakes that apply to `desc` (Mistake.applies), in the zoo's order: those tried to
    explain the worked example's errata (torch_ref/example.py) and a mismatch (zoo/attribution.py)."""
    return [m for m in ZOO if m.applies(desc)]


def mistake(mistake_id):
    """The registered mistake with this id (KeyError if none)."""
    for m in REGISTRY:
        if m.id == mistake_id:
            return m
    raise KeyError(mistake_id)
