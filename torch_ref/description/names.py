"""The names a description uses, with torch's argument names and defaults: activations, losses,
optimizers, schedules, initialisation schemes, and the description's own choices (bias modes,
dtypes, toy sets...). torch_ref/description/spec.py checks descriptions against them; the tests draw from them
(a name added to a registry is drawn everywhere).

The names of activations, losses, optimizers, schedules and init schemes, with torch's class names
and argument defaults, are manual/names.py's registries (both sides read them; manual may not
import torch_ref); the tables here are derived from them, and the rest (argument choices, limits,
bias modes, dtypes, toy and image sets) is the description's own."""
from manual.names import (ACTIVATION_REGISTRY, INIT_REGISTRY, LOSS_REGISTRY, OPTIMIZER_REGISTRY,  # noqa: F401
                          SCHEDULER_REGISTRY, arguments)
from manual.images import IMAGE_CLASSES


ACTIVATION_ARGS = arguments(ACTIVATION_REGISTRY)  # name -> {argument: default}, torch's names
ACTIVATIONS = tuple(ACTIVATION_ARGS)
LOSS_ARGS = arguments(LOSS_REGISTRY)
LOSSES = tuple(LOSS_ARGS)
# values of the arguments that are names rather than numbers
ARG_CHOICES = {"approximate": ("none", "tanh"), "reduction": ("mean", "sum", "batch-mean"), "target": ("index", "probability")}
# activations whose outputs lie in [0, 1], as bce's input must (torch refuses others at run time)
PROBABILITY_OUTPUTS = ("sigmoid", "softmax")
BIASES = ("per-neuron", "shared-frozen", "none")
DTYPES = ("float64", "float32")
DEVICES = ("cpu", "cuda")
OPTIMIZERS = arguments(OPTIMIZER_REGISTRY)  # name -> {argument: default}, torch.optim's
# arguments torch.optim refuses below 0 ("Invalid learning rate", "Invalid epsilon value", ...)
NON_NEGATIVE = ("lr", "momentum", "weight_decay", "eps", "alpha", "lr_decay", "initial_accumulator_value", "rho",
                "momentum_decay")

SCHEDULERS = arguments(SCHEDULER_REGISTRY)  # name -> {argument: default, None when required}
INTEGER_ARGS = ("step_size", "T_max", "warmup_steps", "T_0", "T_mult", "total_iters", "total_steps")  # positive integers
INIT_SCHEMES = arguments(INIT_REGISTRY)  # torch.nn.init's names; glorot/he accepted as aliases
INIT_ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
                "he_uniform": "kaiming_uniform", "he_normal": "kaiming_normal"}
GAIN_NONLINEARITIES = ("linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "selu")  # calculate_gain's
INIT_BIASES = ("linear-default", "zeros")
TOY_SETS = ("xor", "moons", "circles", "linear")
IMAGE_SETS = tuple(IMAGE_CLASSES)  # "bars", "shapes", "digits": manual/images.py
