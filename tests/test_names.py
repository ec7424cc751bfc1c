"""manual/names.py's registries: every description name resolves, on the manual side and on the
twin's, to a class with torch's name, whose arguments are the description's with torch's defaults
(checked against inspect.signature of torch's class), and the mappings both sides build from the
registry make those classes. A name missing on one side, or a default that is not torch's, fails
here (the controls at the end check that the checker itself sees both)."""
import inspect

import pytest
import torch
from torch import nn

import manual.activations
import manual.losses
import manual.lr_scheduler
import manual.modules
import manual.optim
from manual import names
from manual.names import Entry
from torch_ref.twin import model

# kind -> (registry, manual's module, torch's namespace, manual's mapping, the twin's mapping)
KINDS = {
    "activation": (names.ACTIVATION_REGISTRY, manual.activations, nn, manual.activations.ACTIVATIONS,
                   model.ACTIVATIONS),
    "loss": (names.LOSS_REGISTRY, manual.losses, nn, manual.losses.LOSSES, model.LOSSES),
    "optimizer": (names.OPTIMIZER_REGISTRY, manual.optim, torch.optim, manual.optim.OPTIMIZERS, model.OPTIMIZERS),
    "scheduler": (names.SCHEDULER_REGISTRY, manual.lr_scheduler, torch.optim.lr_scheduler,
                  manual.lr_scheduler.SCHEDULERS, model.SCHEDULERS),
}
CASES = [(kind, name) for kind, (registry, *_) in KINDS.items() for name in registry]


def _parameters(fn):
    """{name: inspect.Parameter} of a class's constructor or a function, without self."""
    params = inspect.signature(fn).parameters
    return {k: p for k, p in params.items() if k != "self"}


def _same(ours, theirs):
    return (list(ours) if isinstance(ours, tuple) else ours) == (list(theirs) if isinstance(theirs, tuple)
                                                                  else theirs)


def default_problems(entry, cls):
    """What differs between the entry's arguments and `cls`'s signature (torch's names): an
    argument cls lacks, a default that is not cls's, a required one with a default (or the reverse),
    a fixed argument cls lacks."""
    params, problems = _parameters(cls), []
    for arg, default in entry.torch_defaults().items():
        if arg not in params:
            problems.append(f"{entry.cls} takes no {arg}")
        elif default is None:  # required here: torch's too, or None there (OneCycleLR's total_steps or epochs)
            if params[arg].default not in (inspect.Parameter.empty, None):
                problems.append(f"{entry.cls}.{arg} is not required in torch")
        elif not _same(default, params[arg].default):
            problems.append(f"{entry.cls}.{arg}: {default!r}, torch's {params[arg].default!r}")
    problems += [f"{entry.cls} takes no {arg}" for arg in entry.fixed if arg not in params]
    return problems


# a value for each argument a description must give, where 3 is not one
# (SequentialLR's schedulers: one, made on the same optimizer in `made`; no milestone then)
REQUIRED_VALUES = {"milestones": [2, 4], "lr_lambda": lambda t: 0.5 ** t, "schedulers": []}


def required(entry):
    """Values for the arguments a description must give (None in the registry)."""
    return {arg: REQUIRED_VALUES.get(arg, 3) for arg, default in entry.args.items() if default is None}


def made(kind, mapping, name, entry):
    """The object mapping[name] makes from the description's defaults (a schedule gets an optimizer
    and an optimizer a parameter of the side's own kind)."""
    args = {**entry.args, **required(entry)}
    if kind == "optimizer":
        param = manual.modules.Parameter(torch.zeros(1).numpy()) if mapping is manual.optim.OPTIMIZERS \
            else torch.zeros(1, requires_grad=True)
        return mapping[name]([param], **args)
    if kind == "scheduler":
        optimizer = manual.optim.SGD([], lr=0.1) if mapping is manual.lr_scheduler.SCHEDULERS \
            else torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        if name == "SequentialLR":
            args.update(schedulers=[mapping["ConstantLR"](optimizer)], milestones=[])
        return mapping[name](optimizer, **args)
    return mapping[name](**args)


@pytest.mark.parametrize("kind", list(KINDS))
def test_both_sides_map_exactly_the_registry_names(kind):
    registry, _, _, ours, twins = KINDS[kind]
    assert list(ours) == list(registry) == list(twins)


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_a_name_makes_the_class_of_torchs_name_on_both_sides(kind, name):
    registry, module, namespace, ours, twins = KINDS[kind]
    entry = registry[name]
    mine = getattr(module, entry.cls)
    theirs = getattr(namespace if entry.torch else model, entry.cls)
    assert mine.__name__ == theirs.__name__ == entry.cls
    assert type(made(kind, ours, name, entry)) is mine
    assert type(made(kind, twins, name, entry)) is theirs


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_arguments_and_defaults_are_torchs_on_both_sides(kind, name):
    registry, module, namespace, _, _ = KINDS[kind]
    entry = registry[name]
    assert default_problems(entry, getattr(module, entry.cls)) == []
    if entry.torch:
        assert default_problems(entry, getattr(namespace, entry.cls)) == []


@pytest.mark.parametrize("name", list(names.INIT_REGISTRY))
def test_init_schemes_are_torch_nn_inits(name):
    entry = names.INIT_REGISTRY[name]
    if entry.torch:
        assert default_problems(entry, getattr(nn.init, entry.cls)) == []
    else:
        assert entry.cls == "reset_parameters" and hasattr(nn.Linear, entry.cls)


def test_the_descriptions_arguments_reach_torchs_constructor_renamed():
    """warmup's warmup_steps is LinearLR's total_iters, its end_factor always 1; cross_entropy's
    target never reaches CrossEntropyLoss; softmax is over dim 1."""
    assert names.SCHEDULER_REGISTRY["warmup"].keywords({"warmup_steps": 7, "start_factor": 0.5}) == \
        {"total_iters": 7, "start_factor": 0.5, "end_factor": 1.0}
    assert names.LOSS_REGISTRY["cross_entropy"].keywords({"reduction": "sum", "target": "probability"}) == \
        {"reduction": "sum"}
    sched = model.SCHEDULERS["warmup"](torch.optim.SGD([torch.zeros(1, requires_grad=True)]), warmup_steps=7)
    assert (sched.total_iters, sched.end_factor) == (7, 1.0)
    assert model.activation("softmax").dim == manual.activations.ACTIVATIONS["softmax"]().dim == 1


# --- controls: the checks above fail where a registry line is wrong ---

@pytest.mark.parametrize("entry,namespace", [
    (Entry("LeakyReLU", {"negative_slope": 0.02}), nn),                 # a default not torch's
    (Entry("Adam", {"lr": 1e-3, "beta": [0.9, 0.999]}), torch.optim),    # an argument torch lacks
    (Entry("StepLR", {"step_size": 1, "gamma": 0.1}), torch.optim.lr_scheduler),  # required in torch
    (Entry("Softmax", fixed={"axis": 1}), nn),                           # a fixed argument torch lacks
    (Entry("LinearLR", {"warmup_steps": 5}), torch.optim.lr_scheduler),  # not renamed to total_iters
])
def test_the_checker_sees_a_wrong_registry_line(entry, namespace):
    assert default_problems(entry, getattr(namespace, entry.cls))


def test_a_name_without_a_class_on_one_side_fails_to_resolve():
    with pytest.raises(AttributeError):
        names.resolve({"swish": Entry("Swish")}, manual.activations)
