"""The tests' planted bugs: one wrong formula each, in an activation, a loss, a layer, an optimizer,
a schedule or the clipping, registered with the zoo's mistakes in torch_ref/zoo/mistakes.py (REGISTRY)
and built the same way (torch_ref/zoo/faulty.py). Not shown by `backprop-check zoo`: each checks that
one more formula of the engine is held by the lockstep, at the iteration, stage and tensor where
its wrong value first appears (tests/test_mistakes.py runs them all, and their controls). Each is
also a plug-in factory, e.g. `--impl torch_ref.zoo.planted:TanhDerivativeMissing`."""
import math

import numpy as np

import manual.activations as A
import manual.clip_grad
import manual.functional
import manual.losses as L
import manual.lr_scheduler
import manual.modules
import manual.optim as O
import manual.trainer
from .faulty import Mistake, broken_adam, net
from ..description.files import bundled_path
from ..description import spec

BOTH = (("float64", "free"), ("float32", "free"))
Linear = manual.modules.Linear


def planted(what, replaces, description, stage, tensor, iteration=0, checks=BOTH, id=None):
    """A test-only mistake; its id, unless given, is its faulty function's name, dashed."""
    id = id or next(iter(replaces.values())).__name__.replace("_", "-")
    return Mistake(id, what, replaces, description, stage, tensor, iteration,
                   checks=checks)


# --- activations, layers, losses and SGD (tests/test_negative_controls.py's table, before) ---------

def sigmoid_derivative_sign_flipped(self, grad_output):
    return -grad_output * self.out * (1.0 - self.out)


def sigmoid_derivative_missing_one_minus(self, grad_output):
    return grad_output * self.out


def tanh_derivative_missing(self, grad_output):
    return grad_output


def relu_mask_inverted(self, grad_output):
    return np.where(self.mask, 0.0, grad_output)


def weight_grad_transposed(self, grad_output, input_grad=True):
    self.weight.accumulate((grad_output.T @ self.x).T.reshape(self.weight.data.shape))
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output @ self.weight.data if input_grad else None


def bias_grad_first_sample_only(self, grad_output, input_grad=True):
    self.weight.accumulate(grad_output.T @ self.x)
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output[0])
    return grad_output @ self.weight.data if input_grad else None


def grad_input_through_ones(self, grad_output, input_grad=True):
    self.weight.accumulate(grad_output.T @ self.x)
    if self.bias is not None and self.bias.requires_grad:
        self.bias.accumulate(grad_output.sum(axis=0))
    return grad_output @ np.ones_like(self.weight.data) if input_grad else None


def mse_grad_not_divided_by_n(self):
    return 2.0 * self.diff


def half_sse_loss_without_half(self, input, target):
    self.diff = input - target
    return np.sum(self.diff * self.diff)


def sgd_adds_gradient(self):
    for p in self.params:
        p.data += self.lr * p.grad


def linear_forward_without_bias(self, x):
    self.x = x
    return x @ self.weight.data.T


def small(sizes, activation, loss, bias):
    """batches of 3 of 12 random samples, 20 steps, SGD 0.1"""
    return net(sizes, activation, loss, bias, batch_size=3, n=12, steps=20)


WORKED_LIKE = ([2, 2, 2], "sigmoid", "half-sse", "shared-frozen")
TANH = ([3, 4, 2], "tanh", "mse", "per-neuron")

SigmoidDerivativeSignFlipped = planted(
    "σ′ with its sign flipped.", {(A.Sigmoid, "backward"): sigmoid_derivative_sign_flipped},
    small(*WORKED_LIKE), "delta", "layers.1")
SigmoidDerivativeMissingOneMinus = planted(
    "σ′ = out, the (1 − out) left out.", {(A.Sigmoid, "backward"): sigmoid_derivative_missing_one_minus},
    small([3, 4, 2], "sigmoid", "mse", "per-neuron"), "delta", "layers.1")
TanhDerivativeMissing = planted(
    "tanh′ left out of the chain rule.", {(A.Tanh, "backward"): tanh_derivative_missing},
    small([3, 4, 2], ["tanh", "identity"], "mse", "per-neuron"), "delta", "layers.0")
ReluMaskInverted = planted(
    "ReLU's gradient passed where the input was negative, stopped where it was positive.",
    {(A.ReLU, "backward"): relu_mask_inverted}, small([3, 6, 2], ["relu", "identity"], "mse", "per-neuron"),
    "delta", "layers.0")
WeightGradTransposedSquare = planted(
    "grad_W transposed, on square layers (the shapes cannot give it away).",
    {(Linear, "backward"): weight_grad_transposed}, small([3, 3, 3], "tanh", "mse", "none"),
    "grad", "layers.1.weight", id="weight-grad-transposed-square")
WeightGradTransposedSharedBias = planted(
    "grad_W transposed, on the seed's 2-2-2 layers.", {(Linear, "backward"): weight_grad_transposed},
    small(*WORKED_LIKE), "grad", "layers.1.weight", id="weight-grad-transposed-shared-bias")
BiasGradFirstSampleOnly = planted(
    "The bias gradient of the batch's first sample only.", {(Linear, "backward"): bias_grad_first_sample_only},
    small(*TANH), "grad", "layers.1.bias")
GradInputThroughOnes = planted(
    "The error passed back through a weight of ones.", {(Linear, "backward"): grad_input_through_ones},
    small([3, 4, 2], "tanh", "mse", "none"), "delta", "layers.0")
MseGradNotDividedByN = planted(
    "MSE's gradient 2(out − t), not divided by N·C.", {(L.MSELoss, "backward"): mse_grad_not_divided_by_n},
    small(*TANH), "delta", "layers.1")
HalfSseLossWithoutHalf = planted(
    "½·SSE reported without its ½.", {(L.HalfSSELoss, "forward"): half_sse_loss_without_half},
    small(*WORKED_LIKE), "loss", "loss")
SgdAddsGradient = planted(
    "SGD climbs: θ += lr·g.", {(O.SGD, "step"): sgd_adds_gradient}, small(*TANH), "param", "layers.0.weight")
LinearForwardWithoutBias = planted(
    "The bias left out of the forward pass.", {(Linear, "forward"): linear_forward_without_bias},
    small(*TANH), "output", "output")


# --- activations and losses with arguments (tests/test_activations_losses.py's table, before) ------

def cross_entropy_grad_forgets_the_target(self):
    return self.p * (1.0 / len(self.t) if self.reduction == "mean" else 1.0)


def cross_entropy_ignores_label_smoothing(self, input, target):
    n, c = input.shape
    logp = manual.functional.log_softmax(input)
    t = np.zeros_like(input)
    t[np.arange(n), target] = 1.0
    self.p, self.t = np.exp(logp), t
    self.count, self.shape = n, input.shape  # (what the engine's backward reads)
    return np.mean(-(t * logp).sum(axis=1))


def log_softmax_grad_without_the_softmax_term(self, grad_output):
    return grad_output


def softmax_grad_summed_over_the_batch(self, grad_output):
    return self.out * (grad_output - (grad_output * self.out).sum(axis=0, keepdims=True))


def leaky_relu_grad_with_zero_slope(self, grad_output):
    return np.where(self.mask, grad_output, 0.0)


def gelu_tanh_grad_missing_the_cubic_term(self, grad_output):
    x, du = self.x, np.sqrt(2.0 / np.pi)
    return grad_output * (0.5 * (1.0 + self.t) + 0.5 * x * (1.0 - self.t * self.t) * du)


def softplus_forward_ignores_beta(self, x):
    z = x * self.beta
    self.linear, self.s = z > self.threshold, manual.functional.sigmoid(z)
    return np.where(self.linear, x, np.logaddexp(0.0, x))


def bce_grad_sign_flipped(self):
    x = self.input
    return (self.target - x) / np.maximum(x * (1.0 - x), 1e-12) / self.input.size


def smooth_l1_grad_not_divided_by_beta(self):
    d = self.diff
    return np.clip(d, -self.beta, self.beta) / d.size


def with_args(sizes, activation, loss):
    """per-neuron biases, batches of 3 of 9 random samples, 5 steps, SGD 0.1"""
    return net(sizes, activation, loss, batch_size=3, n=9, steps=5)


CrossEntropyGradForgetsTheTarget = planted(
    "Cross-entropy's gradient without the target subtracted.",
    {(L.CrossEntropyLoss, "backward"): cross_entropy_grad_forgets_the_target},
    with_args([3, 5, 4], ["tanh", "identity"], "cross_entropy"), "delta", "layers.1")
CrossEntropyIgnoresLabelSmoothing = planted(
    "Cross-entropy's loss without its label smoothing.",
    {(L.CrossEntropyLoss, "forward"): cross_entropy_ignores_label_smoothing},
    with_args([3, 5, 4], ["tanh", "identity"], {"name": "cross_entropy", "label_smoothing": 0.2}), "loss", "loss")
LogSoftmaxGradWithoutTheSoftmaxTerm = planted(
    "log_softmax's gradient without its softmax term.",
    {(A.LogSoftmax, "backward"): log_softmax_grad_without_the_softmax_term},
    with_args([3, 5, 4], ["tanh", "log_softmax"], "nll"), "delta", "layers.1")
SoftmaxGradSummedOverTheBatch = planted(
    "softmax's gradient summed over the batch, not over the features.",
    {(A.Softmax, "backward"): softmax_grad_summed_over_the_batch},
    with_args([3, 5, 4], ["softmax", "identity"], "mse"), "delta", "layers.0")
LeakyReluGradWithZeroSlope = planted(
    "leaky_relu's gradient 0 below 0, its slope forgotten.",
    {(A.LeakyReLU, "backward"): leaky_relu_grad_with_zero_slope},
    with_args([3, 6, 2], [{"name": "leaky_relu", "negative_slope": 0.2}, "identity"], "mse"), "delta", "layers.0")
GeluTanhGradMissingTheCubicTerm = planted(
    "GELU (tanh)'s gradient without the derivative of its cubic term.",
    {(A.GELU, "backward"): gelu_tanh_grad_missing_the_cubic_term},
    with_args([3, 6, 2], [{"name": "gelu", "approximate": "tanh"}, "identity"], "mse"), "delta", "layers.0")
SoftplusForwardIgnoresBeta = planted(
    "softplus computed as if β were 1.", {(A.Softplus, "forward"): softplus_forward_ignores_beta},
    with_args([3, 6, 2], [{"name": "softplus", "beta": 2.0}, "identity"], "mse"), "output", "output")
BceGradSignFlipped = planted(
    "BCE's gradient with its sign flipped.", {(L.BCELoss, "backward"): bce_grad_sign_flipped},
    with_args([3, 5, 2], ["tanh", "sigmoid"], "bce"), "delta", "layers.1")
SmoothL1GradNotDividedByBeta = planted(
    "smooth_l1's gradient inside |d| < β not divided by β.",
    {(L.SmoothL1Loss, "backward"): smooth_l1_grad_not_divided_by_beta},
    with_args([3, 5, 2], ["tanh", "identity"], {"name": "smooth_l1", "beta": 0.5}), "delta", "layers.1")


# --- update rules (tests/test_optim.py's table, before) --------------------------------------------

def corrected(self, m, v, t):
    """torch's update, both bias corrections applied (broken_adam with it is a correct Adam)."""
    return self.lr / (1 - self.betas[0] ** t) * (m / (np.sqrt(v) / (1 - self.betas[1] ** t) ** 0.5 + self.eps))


adam_without_bias_correction_1 = broken_adam(  # the first moment's correction left out
    "adam_without_bias_correction_1",
    lambda self, m, v, t: self.lr * (m / (np.sqrt(v) / (1 - self.betas[1] ** t) ** 0.5 + self.eps)))
adam_exp_avg_sq_of_abs_grad = broken_adam("adam_exp_avg_sq_of_abs_grad", corrected, second_moment=np.abs)


def sgd_momentum_ignores_dampening(self):
    for _, p, state, g in self._grads(self.weight_decay):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.copy()
        else:
            state["momentum_buffer"] = self.momentum * state["momentum_buffer"] + g
        p.data -= self.lr * state["momentum_buffer"]


def rmsprop_centered_without_mean_square(self):
    a = self.alpha
    for _, p, state, g in self._grads(self.weight_decay):
        if not state:
            state.update(step=0, square_avg=np.zeros_like(p.data), grad_avg=np.zeros_like(p.data))
        state["step"] += 1
        v = state["square_avg"]
        v *= a
        v += (1 - a) * g * g
        state["grad_avg"] += (1 - a) * (g - state["grad_avg"])
        p.data -= self.lr * (g / (np.sqrt(v) + self.eps))


def adagrad_decay_off_by_one(self):
    for _, p, state, g in self._grads(self.weight_decay):
        state["step"] += 1
        state["sum"] += g * g
        clr = self.lr / (1 + state["step"] * self.lr_decay)
        p.data -= clr * (g / (np.sqrt(state["sum"]) + self.eps))


def optimized(optimizer):
    """3-4-2 tanh, no biases, batches of 3 of 12 random samples, 10 steps"""
    return net([3, 4, 2], "tanh", bias="none", batch_size=3, n=12, steps=10, optimizer=optimizer)


AdamWithoutBiasCorrection1 = planted(
    "Adam with the first moment's bias correction left out.", {(O.Adam, "step"): adam_without_bias_correction_1},
    optimized({"name": "adam", "lr": 0.01}), "param", "layers.0.weight")
AdamExpAvgSqOfAbsGrad = planted(
    "Adam's second moment of |g|, not g².", {(O.Adam, "step"): adam_exp_avg_sq_of_abs_grad},
    optimized({"name": "adam", "lr": 0.01}), "optim", "layers.0.weight.exp_avg_sq")
SgdMomentumIgnoresDampening = planted(
    "SGD's momentum buffer without (1 − dampening).", {(O.SGD, "step"): sgd_momentum_ignores_dampening},
    optimized({"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.5}), "optim",
    "layers.0.weight.momentum_buffer", iteration=1)
RmspropCenteredWithoutMeanSquare = planted(
    "Centered RMSprop without the mean's square subtracted.",
    {(O.RMSprop, "step"): rmsprop_centered_without_mean_square},
    optimized({"name": "rmsprop", "centered": True}), "param", "layers.0.weight")
AdagradDecayOffByOne = planted(
    "Adagrad's rate decayed by t, not t − 1.", {(O.Adagrad, "step"): adagrad_decay_off_by_one},
    optimized({"name": "adagrad", "lr_decay": 0.1}), "param", "layers.0.weight")


# --- schedules and clipping (tests/test_schedules_clip.py's table, before) -------------------------

def cosine_with_sine(self, t):
    return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.sin(math.pi * t / self.T_max)) / 2


def step_lr_one_step_late(self, t):
    return self.base_lr * self.gamma ** ((t - 1) // self.step_size) if t else self.base_lr


def warmup_from_full_rate(self, t):
    e, total = self.end_factor, self.total_iters  # start_factor ignored: taken as 1
    return self.base_lr * (1.0 + (e - 1.0) * min(t, total) / total)


def clip_norm_without_epsilon(self):
    grads = [p.grad for p in self.optimizer.params]
    coef = min(self.clip["max_norm"] / manual.clip_grad.total_norm(grads, self.clip["norm_type"]), 1.0)
    for g in grads:
        g *= coef


def clip_norm_per_parameter(self):
    for p in self.optimizer.params:
        n = np.linalg.norm(p.grad.ravel(), ord=self.clip["norm_type"])
        p.grad *= min(self.clip["max_norm"] / (n + 1e-6), 1.0)


def scheduled(**section):
    """3-6-2 tanh → identity, batches of 4 of 10 random samples, SGD 0.5 with momentum 0.5, 10 steps"""
    return net([3, 6, 2], ["tanh", "identity"], batch_size=4, n=10, steps=10,
               optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.5}, **section)


F64 = (("float64", "free"),)
S = manual.lr_scheduler
CosineWithSine = planted(
    "Cosine annealing with a sine.", {(S.CosineAnnealingLR, "lr_at"): cosine_with_sine},
    scheduled(scheduler={"name": "cosine", "T_max": 10}), "param", "layers.0.weight", checks=F64)
StepLrOneStepLate = planted(
    "StepLR decaying one step late.", {(S.StepLR, "lr_at"): step_lr_one_step_late},
    scheduled(scheduler={"name": "step", "step_size": 3}), "param", "layers.0.weight", iteration=3, checks=F64)
WarmupFromFullRate = planted(
    "A warmup that starts at the full rate (its start factor ignored).", {(S.LinearLR, "lr_at"): warmup_from_full_rate},
    scheduled(scheduler={"name": "warmup"}), "param", "layers.0.weight", checks=F64)
ClipNormWithoutEpsilon = planted(
    "clip_grad_norm_ without torch's 1e-6 in max_norm / (norm + 1e-6).",
    {(manual.trainer.Trainer, "clip_grads"): clip_norm_without_epsilon},
    scheduled(clip={"max_norm": 0.05}), "grad", "layers.1.bias", checks=F64)
ClipNormPerParameter = planted(
    "Each gradient clipped by its own norm, not by the norm of all.",
    {(manual.trainer.Trainer, "clip_grads"): clip_norm_per_parameter},
    scheduled(clip={"max_norm": 0.05}), "grad", "layers.1.bias", checks=F64)


# --- wrong Adams too small for a fixed float32 tolerance (tests/test_shadow.py, before) ------------

adam_without_bias_correction_2 = broken_adam(  # neither moment corrected
    "adam_without_bias_correction_2",
    lambda self, m, v, t: self.lr / (1 - self.betas[0] ** t) * (m / (np.sqrt(v) + self.eps)))
adam_bias_correction_one_step_ahead = broken_adam(
    "adam_bias_correction_one_step_ahead",
    lambda self, m, v, t: self.lr / (1 - self.betas[0] ** (t + 1))
    * (m / (np.sqrt(v) / (1 - self.betas[1] ** (t + 1)) ** 0.5 + self.eps)))
adam_eps_inside_the_root = broken_adam(
    "adam_eps_inside_the_root",
    lambda self, m, v, t: self.lr / (1 - self.betas[0] ** t) * (m / np.sqrt(v / (1 - self.betas[1] ** t) + self.eps)))


def moons_adam():
    """torch_ref/specs/moons_adam_float32.toml: [2, 16, 16, 1], tanh, mse, Adam 0.01, moons, float32"""
    return spec.load(bundled_path("moons_adam_float32"))


SHADOW = (("float32", "shadow"),)
AdamWithoutBiasCorrection2 = planted(
    "Adam with neither moment's bias correction.", {(O.Adam, "step"): adam_without_bias_correction_2},
    moons_adam, "param", "layers.0.weight", checks=SHADOW)
AdamBiasCorrectionOneStepAhead = planted(
    "Adam's bias corrections one step ahead.", {(O.Adam, "step"): adam_bias_correction_one_step_ahead},
    moons_adam, "param", "layers.0.weight", checks=SHADOW)
AdamEpsInsideTheRoot = planted(
    "Adam's ε inside the square root.", {(O.Adam, "step"): adam_eps_inside_the_root},
    moons_adam, "param", "layers.0.weight", checks=SHADOW)

PLANTED = [m for m in globals().values() if isinstance(m, Mistake)]  # in the order above
