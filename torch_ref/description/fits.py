"""What depends on the run's dtype and length, checked before anything is allocated: every number
fits the dtype, the drawn weights and the schedule stay finite in it, and the run fits in the
machine's memory (an estimate of parameters, data, a batch's activations and a report's history)."""
import math
import os
import sys

from ..errors import SpecError, show
from .training import check_schedule_run

DTYPE_MAX = {"float64": sys.float_info.max, "float32": 3.4028234663852886e38}  # largest finite value
# Memory, estimated before anything is allocated (measured on CPU: a lower bound, so that no run
# that fits is refused): every parameter lives in ~16 float64 copies (both sides' parameters,
# gradients, optimizer state, the initial state, the comparison's buffers), every sample in 2 (the
# data set and its dtype copy), every activation of a batch in 8 (both sides' forward and backward).
PARAM_COPIES, SAMPLE_COPIES, ACTIVATION_COPIES = 16, 2, 8


def check_fits(desc, record=False):
    """The checks that depend on run.dtype and run.steps (call again after overriding them): every
    number fits the dtype, the drawn weights and the learning-rate schedule stay finite in it, and
    the run fits in the memory available (with `record`, the per-iteration history of a report
    too). Returns `desc`."""
    dtype = desc["run"]["dtype"]
    if DTYPE_MAX[dtype] < sys.float_info.max:  # every number is a finite float64 already
        for field, value in _hyper_numbers(desc):
            _fits(value, dtype, field)
    _check_init_scale(desc["init"], desc["network"]["sizes"], dtype)
    if desc.get("scheduler"):
        _check_schedule(desc["scheduler"], desc["optimizer"]["lr"], desc["run"]["steps"], dtype)
        check_schedule_run(desc["scheduler"], desc["optimizer"], desc["run"]["steps"])
    check_memory(desc, record)
    return desc


def _fits(value, dtype, field):
    """Refuse a number, or the first of nested lists of numbers, beyond the dtype's range."""
    limit = DTYPE_MAX[dtype]
    if isinstance(value, list):
        for i, v in enumerate(value):
            if not isinstance(v, list) and abs(v) <= limit:
                continue
            _fits(v, dtype, f"{field}[{i}]")
        return
    if abs(value) > limit:
        raise SpecError(field, f"{show(value, 40)} does not fit {dtype} (largest finite value {limit:.4g});"
                               f" run.dtype = {dtype!r}")


def _hyper_numbers(desc):
    """(field, number) for every real number of a normalised description that the run converts to
    its dtype: hyper-parameters, activation and loss arguments, explicit weights, biases and data."""
    net, init, data = desc["network"], desc["init"], desc["data"]
    activation_args = net.get("activation_args", [])  # (none in a layer list)
    one = all(a == activation_args[0] for a in activation_args)
    for k, args in enumerate(activation_args):
        for arg, v in args.items():
            if not isinstance(v, str):
                yield (f"network.activation.{arg}" if one else f"network.activation[{k}].{arg}"), v
    yield from ((f"network.loss.{arg}", v) for arg, v in net["loss_args"].items()
                if not isinstance(v, str) and arg != "ignore_index")  # a class index, never converted
    for section in ("optimizer", "scheduler", "clip"):
        for arg, v in (desc.get(section) or {}).items():
            if arg == "betas":
                yield from ((f"optimizer.betas[{i}]", b) for i, b in enumerate(v))
            elif isinstance(v, float) and math.isfinite(v):  # clip.norm_type may be inf
                yield f"{section}.{arg}", v
    yield from ((f"init.{arg}", init[arg]) for arg in ("gain", "a", "param") if init.get(arg) is not None)
    yield "init.weights", init.get("weights", [])  # nested lists: _fits names the element
    yield "init.biases", init.get("biases", [])
    if "toy" in data or "images" in data:
        kind = "toy" if "toy" in data else "images"
        yield f"data.{kind}.noise", data[kind]["noise"]
    elif "x" in data:
        yield "data.x", data["x"]
        if not class_index_targets(net):
            yield "data.y", data["y"]


def _check_init_scale(init, sizes, dtype):
    """Refuse an initialisation whose weights would not be finite in `dtype`: torch.nn.init's
    calculate_gain squares a leaky_relu slope (OverflowError beyond 1.3e154), and xavier's bound
    gain·√(6 / (fan_in + fan_out)) must fit (a normal draw's σ is smaller; 10σ is asked to fit)."""
    if "seed" not in init:
        return
    for arg in ("a", "param"):
        if init.get(arg) is not None and init.get("nonlinearity") == "leaky_relu" and math.isinf(init[arg] * init[arg]):
            raise SpecError(f"init.{arg}", f"{show(init[arg], 40)}: calculate_gain squares the leaky_relu slope,"
                                           " which overflows")
    if "gain" in init and "nonlinearity" not in init:
        fans = min(a + b for a, b in zip(sizes, sizes[1:]))
        factor = math.sqrt(6.0 / fans) if init["scheme"] == "xavier_uniform" else 10 * math.sqrt(2.0 / fans)
        bound = abs(init["gain"]) * factor
        if bound > DTYPE_MAX[dtype]:
            raise SpecError("init.gain", f"{show(init['gain'], 40)} draws weights up to {bound:.4g}, beyond"
                                         f" {dtype}'s largest finite value {DTYPE_MAX[dtype]:.4g}")


def _check_schedule(sched, lr, steps, dtype):
    """Refuse a schedule whose learning rate grows beyond the dtype within run.steps (step and
    exponential with gamma > 1): torch's float32 optimizers refuse such a rate, and in float64 it
    becomes inf."""
    if sched["name"] not in ("step", "exponential", "StepLR", "ExponentialLR") or sched["gamma"] <= 1 or lr == 0:
        return
    k = steps - 1 if sched["name"] in ("exponential", "ExponentialLR") else (steps - 1) // sched["step_size"]
    log_lr = math.log(lr) + k * math.log(sched["gamma"])
    if log_lr > math.log(DTYPE_MAX[dtype]):
        raise SpecError("scheduler.gamma", f"{show(sched['gamma'], 40)}: the learning rate reaches"
                                           f" {show(lr, 20)} · {show(sched['gamma'], 20)}^{k} = 10^{log_lr / math.log(10):.0f}"
                                           f" within run.steps = {steps}, beyond {dtype}'s largest finite value")


def memory_estimate(desc, record=False):
    """{field: bytes}: the memory a lockstep run of `desc` holds, by the field that decides each
    part (a lower bound; see PARAM_COPIES): network.sizes the parameters, data.* the samples,
    data.batch_size a batch's activations, run.steps the per-iteration history (with `record`)."""
    sizes, data = desc["network"]["sizes"], desc["data"]
    n_params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    kind = next((k for k in ("toy", "images", "sequence") if k in data), None)
    if kind:
        n, where = data[kind]["n"], f"data.{kind}.n"
    elif "random" in data:
        n, where = data["random"]["n"], "data.random.n"
    else:
        n, where = len(data["x"]), "data.x"
    parts = {"network.sizes": 8 * PARAM_COPIES * n_params,
             where: 8 * SAMPLE_COPIES * n * (sizes[0] + sizes[-1]),
             "data.batch_size": 8 * ACTIVATION_COPIES * min(data["batch_size"], n) * sum(sizes)}
    if record:  # History: both losses, and per compared tensor two numbers, per iteration
        tensors = 2 + 2 * (len(sizes) - 1)  # weight and bias per layer
        compared = 2 + (len(sizes) - 1) + tensors * 4  # output, loss, deltas; grad, param, ≤ 2 optim states
        parts["run.steps"] = 8 * desc["run"]["steps"] * (2 + 2 * compared)
    return parts


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable of /proc/meminfo, else the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(desc, record=False):
    """Refuse a run whose estimated memory exceeds what the machine has available, naming the
    field behind the largest part."""
    parts = memory_estimate(desc, record)
    need, have = sum(parts.values()), available_memory()
    if have is None or need <= have:
        return
    field = max(parts, key=parts.get)
    detail = ", ".join(f"{f} {_size(b)}" for f, b in sorted(parts.items(), key=lambda p: -p[1]) if b)
    raise SpecError(field, f"the run needs at least {_size(need)} of memory ({detail}); this machine has"
                           f" {_size(have)} available")


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024


def class_index_targets(network):
    """True where the loss takes class indices (nll, and cross_entropy with target = "index")."""
    return network["loss"] == "nll" or (network["loss"] == "cross_entropy"
                                        and network["loss_args"]["target"] == "index")
