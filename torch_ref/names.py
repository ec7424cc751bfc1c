"""The registry of names a description uses, with torch's argument names and defaults: activations,
losses, optimizers, schedules, initialisation schemes and toy sets. torch_ref/spec.py checks
descriptions against it; the tests draw from it (a name added here is drawn everywhere)."""


# name -> {argument: default}: torch's argument names and defaults (torch.nn.functional's keywords)
ACTIVATION_ARGS = {
    "sigmoid": {}, "tanh": {}, "relu": {}, "identity": {},
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": "none"},
    "silu": {},
    "softplus": {"beta": 1.0, "threshold": 20.0},
    "softmax": {}, "log_softmax": {},  # over the feature dimension (dim=1)
}
ACTIVATIONS = tuple(ACTIVATION_ARGS)
# `target` is this project's: "index" (class indices, (N,) integers) or "probability" ((N, C) rows)
LOSS_ARGS = {
    "half-sse": {},  # the seed's Σ ½(t − o)², always summed
    "mse": {"reduction": "mean"},
    "l1": {"reduction": "mean"},
    "smooth_l1": {"reduction": "mean", "beta": 1.0},
    "huber": {"reduction": "mean", "delta": 1.0},
    "cross_entropy": {"reduction": "mean", "label_smoothing": 0.0, "target": "index"},
    "nll": {"reduction": "mean"},
    "bce": {"reduction": "mean"},
    "bce_with_logits": {"reduction": "mean"},
}
LOSSES = tuple(LOSS_ARGS)
# values of the arguments that are names rather than numbers
ARG_CHOICES = {"approximate": ("none", "tanh"), "reduction": ("mean", "sum"), "target": ("index", "probability")}
# activations whose outputs lie in [0, 1], as bce's input must (torch refuses others at run time)
PROBABILITY_OUTPUTS = ("sigmoid", "softmax")
BIASES = ("per-neuron", "shared-frozen", "none")
DTYPES = ("float64", "float32")
DEVICES = ("cpu", "cuda")
# name -> {argument: default}: torch.optim's argument names and defaults (tests compare with torch's signatures)
OPTIMIZERS = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
            "maximize": False},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
             "maximize": False},
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False,
              "maximize": False},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False,
                "maximize": False},
    "adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10,
                "maximize": False},
}
# arguments torch.optim refuses below 0 ("Invalid learning rate", "Invalid epsilon value", ...)
NON_NEGATIVE = ("lr", "momentum", "weight_decay", "eps", "alpha", "lr_decay", "initial_accumulator_value")

# learning-rate schedules: name -> {argument: default, None when required} (torch.optim.lr_scheduler's names)
SCHEDULERS = {
    "step": {"step_size": None, "gamma": 0.1},           # StepLR
    "exponential": {"gamma": None},                       # ExponentialLR
    "cosine": {"T_max": None, "eta_min": 0.0},            # CosineAnnealingLR
    "warmup": {"warmup_steps": 5, "start_factor": 1.0 / 3},  # LinearLR(start_factor, total_iters=warmup_steps)
}
INTEGER_ARGS = ("step_size", "T_max", "warmup_steps")  # positive integers
# initialisation schemes (torch.nn.init's names, glorot/he accepted as aliases) and their arguments
INIT_SCHEMES = {
    "linear-default": {},
    "xavier_uniform": {"gain": 1.0, "nonlinearity": None, "param": None},
    "xavier_normal": {"gain": 1.0, "nonlinearity": None, "param": None},
    "kaiming_uniform": {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
    "kaiming_normal": {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
}
INIT_ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
                "he_uniform": "kaiming_uniform", "he_normal": "kaiming_normal"}
GAIN_NONLINEARITIES = ("linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "selu")  # calculate_gain's
INIT_BIASES = ("linear-default", "zeros")
TOY_SETS = ("xor", "moons", "circles", "linear")
