"""The one registry of the names a description uses, one table per kind: activations, losses,
optimizers, learning-rate schedules and initialisation schemes.

Each description name maps to an `Entry`: torch's class (or function) name and the description's
arguments with their defaults (torch's argument names and defaults, which the tests check against
torch's signatures). Both sides resolve a name through its class name: `manual` in its own modules
(manual.activations.LeakyReLU, manual.losses.MSELoss, manual.optim.Adam, ...), the torch twin in
torch (torch.nn, torch.optim, torch.optim.lr_scheduler). Adding a name is one line here and the
manual class; torch_ref/description/spec.py validates descriptions with the same tables (through
torch_ref/description/names.py, which re-exports them).

It lives in `manual` because `manual` may import neither torch nor torch_ref, and both sides read
it; it imports nothing beyond the standard library (not even numpy).
"""
from dataclasses import dataclass, field
from functools import partial


@dataclass(frozen=True)
class Entry:
    """One description name.

    cls      torch's class name (or torch.nn.init's function name) that the name stands for
    args     the description's arguments and their defaults (None where required), torch's names
    rename   description argument -> torch's argument, where the description's name differs
    fixed    torch arguments the description does not offer, always passed (e.g. softmax's dim=1)
    own      this project's arguments, not passed to torch's class (e.g. cross_entropy's target)
    torch    False where the class is this project's, not torch's (the twin defines its own)
    """
    cls: str
    args: dict = field(default_factory=dict)
    rename: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    own: tuple = ()
    torch: bool = True

    def keywords(self, args):
        """The keyword arguments of torch's constructor for the description's `args`: the project's
        own arguments dropped, renamed arguments renamed, fixed ones added."""
        out = {self.rename.get(k, k): v for k, v in args.items() if k not in self.own}
        return {**out, **self.fixed}

    def torch_defaults(self):
        """{torch's argument: default} for the description's arguments that torch's class takes."""
        return {self.rename.get(k, k): v for k, v in self.args.items() if k not in self.own}


def build(entry, cls, *positional, **args):
    """cls(*positional, **entry.keywords(args)): `cls` made from a description's arguments."""
    return cls(*positional, **entry.keywords(args))


def resolve(registry, namespace):
    """name -> a callable taking the description's arguments, each made from `namespace`'s class
    named `entry.cls` (a module, e.g. manual.optim or torch.optim). Where the description's
    arguments are the class's own, it is the class itself; otherwise the class with the entry's
    renamed and fixed arguments (`build`)."""
    out = {}
    for name, entry in registry.items():
        cls = getattr(namespace, entry.cls)
        plain = not (entry.rename or entry.fixed or entry.own)
        out[name] = cls if plain else partial(build, entry, cls)
    return out


def arguments(registry):
    """name -> {argument: default}: the description's arguments of every name of `registry`."""
    return {name: entry.args for name, entry in registry.items()}


# torch.nn's activation modules; softmax and log_softmax over the feature dimension
ACTIVATION_REGISTRY = {
    "sigmoid": Entry("Sigmoid"),
    "tanh": Entry("Tanh"),
    "relu": Entry("ReLU"),
    "identity": Entry("Identity"),
    "leaky_relu": Entry("LeakyReLU", {"negative_slope": 0.01}),
    "elu": Entry("ELU", {"alpha": 1.0}),
    "gelu": Entry("GELU", {"approximate": "none"}),
    "silu": Entry("SiLU"),
    "softplus": Entry("Softplus", {"beta": 1.0, "threshold": 20.0}),
    "softmax": Entry("Softmax", fixed={"dim": 1}),
    "log_softmax": Entry("LogSoftmax", fixed={"dim": 1}),
}
# torch.nn's loss modules. `target` is this project's: "index" (class indices, (N,) integers) or
# "probability" ((N, C) rows); torch tells them apart by the target itself.
LOSS_REGISTRY = {
    # the seed's Σ ½(t − o)²: "sum", or "batch-mean" (the sum divided by the batch's N, as much real code has)
    "half-sse": Entry("HalfSSELoss", {"reduction": "sum"}, torch=False),
    "mse": Entry("MSELoss", {"reduction": "mean"}),
    "l1": Entry("L1Loss", {"reduction": "mean"}),
    "smooth_l1": Entry("SmoothL1Loss", {"reduction": "mean", "beta": 1.0}),
    "huber": Entry("HuberLoss", {"reduction": "mean", "delta": 1.0}),
    "cross_entropy": Entry("CrossEntropyLoss", {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0,
                                                "target": "index"}, own=("target",)),
    "nll": Entry("NLLLoss", {"ignore_index": -100, "reduction": "mean"}),
    "bce": Entry("BCELoss", {"reduction": "mean"}),
    "bce_with_logits": Entry("BCEWithLogitsLoss", {"reduction": "mean"}),
}
# torch.optim's optimizers
OPTIMIZER_REGISTRY = {
    "sgd": Entry("SGD", {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
                         "maximize": False}),
    "adam": Entry("Adam", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                           "maximize": False}),
    "adamw": Entry("AdamW", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-2,
                             "amsgrad": False, "maximize": False}),
    "rmsprop": Entry("RMSprop", {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                                 "centered": False, "maximize": False, "eps_inside_sqrt": False},
                     own=("eps_inside_sqrt",)),
    "adagrad": Entry("Adagrad", {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                                 "eps": 1e-10, "maximize": False, "eps_inside_sqrt": False}, own=("eps_inside_sqrt",)),
    "adadelta": Entry("Adadelta", {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False}),
    "nadam": Entry("NAdam", {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                             "momentum_decay": 4e-3, "decoupled_weight_decay": False, "maximize": False}),
    "radam": Entry("RAdam", {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                             "decoupled_weight_decay": False, "maximize": False}),
}
# eps_inside_sqrt (rmsprop, adagrad) is this project's: the denominator √(v + ε) where torch has √v + ε
# (manual.optim.EPS_INSIDE_SQRT, the twin's torch_ref/twin/optim.py)
# torch.optim.lr_scheduler's schedules (None: a required argument). warmup is LinearLR rising to
# lr₀ over warmup_steps iterations: LinearLR(start_factor, end_factor=1, total_iters=warmup_steps)
# by torch's class names, and the earlier short names (step, exponential, cosine, warmup) as aliases.
# LambdaLR's lr_lambda is a string, an expression of `step` (manual/expression.py); SequentialLR's
# schedulers a list of schedule tables. OneCycleLR takes total_steps (not epochs, steps_per_epoch).
SCHEDULER_REGISTRY = {
    "step": Entry("StepLR", {"step_size": None, "gamma": 0.1}),
    "exponential": Entry("ExponentialLR", {"gamma": None}),
    "cosine": Entry("CosineAnnealingLR", {"T_max": None, "eta_min": 0.0}),
    "warmup": Entry("LinearLR", {"warmup_steps": 5, "start_factor": 1.0 / 3}, rename={"warmup_steps": "total_iters"},
                    fixed={"end_factor": 1.0}),
    "StepLR": Entry("StepLR", {"step_size": None, "gamma": 0.1}),
    "MultiStepLR": Entry("MultiStepLR", {"milestones": None, "gamma": 0.1}),
    "ExponentialLR": Entry("ExponentialLR", {"gamma": None}),
    "CosineAnnealingLR": Entry("CosineAnnealingLR", {"T_max": None, "eta_min": 0.0}),
    "CosineAnnealingWarmRestarts": Entry("CosineAnnealingWarmRestarts", {"T_0": None, "T_mult": 1, "eta_min": 0.0}),
    "LinearLR": Entry("LinearLR", {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": 5}),
    "PolynomialLR": Entry("PolynomialLR", {"total_iters": 5, "power": 1.0}),
    "ConstantLR": Entry("ConstantLR", {"factor": 1.0 / 3, "total_iters": 5}),
    "LambdaLR": Entry("LambdaLR", {"lr_lambda": None}),
    "SequentialLR": Entry("SequentialLR", {"schedulers": None, "milestones": None}),
    "OneCycleLR": Entry("OneCycleLR", {"max_lr": None, "total_steps": None, "pct_start": 0.3, "anneal_strategy": "cos",
                                       "cycle_momentum": True, "base_momentum": 0.85, "max_momentum": 0.95,
                                       "div_factor": 25.0, "final_div_factor": 1e4, "three_phase": False}),
}
# torch.nn.init's schemes (manual/init.py draws them; the twin copies the drawn values). xavier's
# nonlinearity and param are this project's: gain = calculate_gain(nonlinearity, param).
# "linear-default" is torch.nn.Linear's own initialisation (its reset_parameters).
INIT_REGISTRY = {
    "linear-default": Entry("reset_parameters", torch=False),
    "xavier_uniform": Entry("xavier_uniform_", {"gain": 1.0, "nonlinearity": None, "param": None},
                            own=("nonlinearity", "param")),
    "xavier_normal": Entry("xavier_normal_", {"gain": 1.0, "nonlinearity": None, "param": None},
                           own=("nonlinearity", "param")),
    "kaiming_uniform": Entry("kaiming_uniform_", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}),
    "kaiming_normal": Entry("kaiming_normal_", {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}),
}
# torch.nn's modules, the types of a description's layer list ([network] layers = [{type = ...}]).
# REQUIRED marks an argument torch requires (None is torch's own None default here, as pooling's
# stride); LAYER_INPUT names the argument a module takes from its input's shape, which a
# description may leave out (inferred from the previous module's output, as torch's lazy modules
# do). `inplace` and `return_indices` are not offered: every module's output is compared as it is.
# Residual (output x + body(x), its modules in `layers`) is this project's: torch has no class;
# so is LastStep (x[:, -1] of a batch-first sequence, manual/sequence.py).
REQUIRED = "<required>"
_CONV = {"in_channels": REQUIRED, "out_channels": REQUIRED, "kernel_size": REQUIRED, "stride": 1, "padding": 0,
         "dilation": 1, "groups": 1, "bias": True, "padding_mode": "zeros"}
_BATCHNORM = {"num_features": REQUIRED, "eps": 1e-05, "momentum": 0.1, "affine": True, "track_running_stats": True}
# torch.nn.RNN/LSTM/GRU (RNNBase's arguments); dropout and proj_size only 0 here (manual/rnn.py)
_RECURRENT = {"input_size": REQUIRED, "hidden_size": REQUIRED, "num_layers": 1, "bias": True, "batch_first": False,
              "dropout": 0.0, "bidirectional": False}
LAYER_REGISTRY = {
    "Linear": Entry("Linear", {"in_features": REQUIRED, "out_features": REQUIRED, "bias": True}),
    "Conv1d": Entry("Conv1d", dict(_CONV)),
    "Conv2d": Entry("Conv2d", dict(_CONV)),
    "ConvTranspose2d": Entry("ConvTranspose2d", {**_CONV, "output_padding": 0}),
    "MaxPool1d": Entry("MaxPool1d", {"kernel_size": REQUIRED, "stride": None, "padding": 0, "dilation": 1,
                                     "ceil_mode": False}),
    "MaxPool2d": Entry("MaxPool2d", {"kernel_size": REQUIRED, "stride": None, "padding": 0, "dilation": 1,
                                     "ceil_mode": False}),
    "AvgPool2d": Entry("AvgPool2d", {"kernel_size": REQUIRED, "stride": None, "padding": 0, "ceil_mode": False,
                                     "count_include_pad": True, "divisor_override": None}),
    "AdaptiveAvgPool2d": Entry("AdaptiveAvgPool2d", {"output_size": REQUIRED}),
    "BatchNorm1d": Entry("BatchNorm1d", dict(_BATCHNORM)),
    "BatchNorm2d": Entry("BatchNorm2d", dict(_BATCHNORM)),
    "LayerNorm": Entry("LayerNorm", {"normalized_shape": REQUIRED, "eps": 1e-05, "elementwise_affine": True,
                                     "bias": True}),
    "GroupNorm": Entry("GroupNorm", {"num_groups": REQUIRED, "num_channels": REQUIRED, "eps": 1e-05,
                                     "affine": True}),
    "Dropout": Entry("Dropout", {"p": 0.5}),
    "Dropout2d": Entry("Dropout2d", {"p": 0.5}),
    "Flatten": Entry("Flatten", {"start_dim": 1, "end_dim": -1}),
    "Unflatten": Entry("Unflatten", {"dim": REQUIRED, "unflattened_size": REQUIRED}),
    "Identity": Entry("Identity"),
    "Residual": Entry("Residual", {"layers": REQUIRED}, torch=False),
    "RNN": Entry("RNN", {**_RECURRENT, "nonlinearity": "tanh"}),
    "LSTM": Entry("LSTM", {**_RECURRENT, "proj_size": 0}),
    "GRU": Entry("GRU", dict(_RECURRENT)),
    "LastStep": Entry("LastStep", torch=False),
    "Embedding": Entry("Embedding", {"num_embeddings": REQUIRED, "embedding_dim": REQUIRED, "padding_idx": None,
                                     "max_norm": None, "norm_type": 2.0, "scale_grad_by_freq": False,
                                     "sparse": False}),
    **{entry.cls: Entry(entry.cls, dict(entry.args)) for name, entry in ACTIVATION_REGISTRY.items()
       if name != "identity"},
    "Softmax": Entry("Softmax", {"dim": None}),
    "LogSoftmax": Entry("LogSoftmax", {"dim": None}),
    # self-attention in a list; `causal` (this project's): the causal mask (a position sees itself and
    # the ones before it). A description must give batch_first = true and dropout = 0.
    "MultiheadAttention": Entry("MultiheadAttention", {"embed_dim": REQUIRED, "num_heads": REQUIRED, "dropout": 0.0,
                                                       "bias": True, "add_bias_kv": False, "add_zero_attn": False,
                                                       "kdim": None, "vdim": None, "batch_first": False,
                                                       "causal": False}, own=("causal",)),
    "TransformerEncoderLayer": Entry("TransformerEncoderLayer", {
        "d_model": REQUIRED, "nhead": REQUIRED, "dim_feedforward": 2048, "dropout": 0.1, "activation": "relu",
        "layer_norm_eps": 1e-05, "batch_first": False, "norm_first": False, "bias": True, "causal": False},
        own=("causal",)),
}
LAYER_INPUT = {"Linear": "in_features", "Conv1d": "in_channels", "Conv2d": "in_channels",
               "ConvTranspose2d": "in_channels", "BatchNorm1d": "num_features", "BatchNorm2d": "num_features",
               "LayerNorm": "normalized_shape", "GroupNorm": "num_channels", "MultiheadAttention": "embed_dim",
               "TransformerEncoderLayer": "d_model"}
LAYER_INPUT.update({kind: "input_size" for kind in ("RNN", "LSTM", "GRU")})  # the last axis of (T, features)
DROPOUT_LAYERS = ("Dropout", "Dropout2d")
