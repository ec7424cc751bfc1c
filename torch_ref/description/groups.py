"""Which parameters get what: [[optimizer.param_groups]] (torch.optim's parameter groups), the
[penalty] section (L1 and L2 penalties added to the loss) and the loss scale's one restriction.

Parameters are chosen by their state-dict names (`layers.0.weight`) or by glob patterns on them
(`"*.weight"`, `"layers.0.*"`, fnmatch's rules: `*` matches any run of characters, dots too); a
pattern that matches nothing is refused, naming it.
"""
from fnmatch import fnmatchcase

from ..errors import SpecError, show
from .checks import get, number, table
from .layers import state_shapes
from .training import check_optimizer


def parameter_names(network):
    """The trained parameters' state-dict names, in torch's order (the optimizer's default order)."""
    if "layers" in network:
        return state_shapes(network)[1]
    with_bias = network["bias"] == "per-neuron"  # shared-frozen: a buffer, never trained
    return [f"layers.{k}.{kind}" for k in range(len(network["sizes"]) - 1)
            for kind in (("weight", "bias") if with_bias else ("weight",))]


def select(patterns, names, field):
    """The names among `names` (in their order) that a name or glob pattern of `patterns` (one
    string or a list of them) matches; a pattern that matches none is refused."""
    items = [patterns] if isinstance(patterns, str) else patterns
    if not (isinstance(items, list) and items and all(isinstance(p, str) for p in items)):
        raise SpecError(field, f"expected a parameter name or glob pattern, or a list of them, got {show(patterns)}")
    chosen = set()
    for j, pattern in enumerate(items):
        matched = {n for n in names if fnmatchcase(n, pattern)}
        if not matched:
            where = field if isinstance(patterns, str) else f"{field}[{j}]"
            raise SpecError(where, f"{show(pattern)} matches no parameter; the parameters are {names}")
        chosen |= matched
    return [n for n in names if n in chosen]


def check_param_groups(t, optimizer, network):
    """optimizer.param_groups: a list of tables, each `params` and any of the optimizer's arguments
    as an override. Normalised as torch's optimizer.param_groups hold them: every group with every
    argument (the optimizer's own where the group gives none), the parameters by name; those no
    group names form a last group with the optimizer's own arguments (torch requires every
    parameter listed; the description fills that in). Without param_groups: `optimizer` as it is."""
    if "param_groups" not in t:
        return optimizer
    groups = t["param_groups"]
    if not (isinstance(groups, list) and groups):
        raise SpecError("optimizer.param_groups", f"expected a list of tables ([[optimizer.param_groups]]),"
                                                  f" got {show(groups)}")
    names, owner, out = parameter_names(network), {}, []
    for i, group in enumerate(groups):
        field = f"optimizer.param_groups[{i}]"
        table(group, field)
        params = select(get(group, field, "params"), names, f"{field}.params")
        for name in params:
            if name in owner:
                raise SpecError(f"{field}.params", f"{name} is already in optimizer.param_groups[{owner[name]}]:"
                                                   " a parameter belongs to at most one group")
            owner[name] = i
        out.append({"params": params, **_group_arguments(group, optimizer, field)})
    rest = [n for n in names if n not in owner]
    if rest:
        out.append({"params": rest, **{k: v for k, v in optimizer.items() if k != "name"}})
    return {**optimizer, "param_groups": out}


def _group_arguments(group, optimizer, field):
    """The group's arguments: the optimizer's, overridden by the group's, each checked as
    [optimizer]'s are, a refusal naming the group's field."""
    overrides = {k: v for k, v in group.items() if k != "params"}
    if "name" in overrides:
        raise SpecError(f"{field}.name", "a group takes the optimizer's arguments, not another optimizer")
    try:
        merged = check_optimizer({**optimizer, **overrides})
    except SpecError as e:
        raise SpecError(field + e.field[len("optimizer"):] if e.field.startswith("optimizer.") else e.field,
                        e.message) from None
    return {k: v for k, v in merged.items() if k != "name"}


def check_penalty(t, network):
    """[penalty]: l2 = λ adds (λ/2)·Σθ², l1 = λ adds λ·Σ|θ| to the loss, over `params` (names or
    globs; default: the weights, every parameter whose name ends in "weight")."""
    table(t, "penalty")
    if "l1" not in t and "l2" not in t:
        raise SpecError("penalty", "give l2 (adds (l2/2)·Σθ² to the loss) or l1 (adds l1·Σ|θ|), or both")
    out = {}
    for key in ("l1", "l2"):
        value = number(t.get(key, 0.0), f"penalty.{key}")
        if value < 0:
            raise SpecError(f"penalty.{key}", f"must be >= 0, got {value}")
        out[key] = value
    names = parameter_names(network)
    if "params" in t:
        return {**out, "params": select(t["params"], names, "penalty.params")}
    weights = [n for n in names if n.endswith("weight")]
    if not weights:
        raise SpecError("penalty.params", f"no parameter's name ends in weight (the default); name them: {names}")
    return {**out, "params": weights}


def check_loss_scale(network):
    """reduction = "batch-mean" divides by the batch's N; a loss over every time step counts N·T
    positions, which the two sides lay out differently: refused there ("mean" or "sum")."""
    if network.get("loss_args", {}).get("reduction") == "batch-mean" and len(network.get("output_shape", ())) == 2:
        raise SpecError("network.loss.reduction", '"batch-mean" divides by the number of samples; a loss over'
                                                  ' every time step takes "mean" or "sum"')
