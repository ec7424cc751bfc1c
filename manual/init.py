"""Initial parameters, drawn in numpy: the manual side decides them and the twin copies them."""
import numpy as np


def linear_default(sizes, bias, seed):
    """torch.nn.Linear's default initialisation, drawn from numpy's generator `seed`.

        W ~ U(−1/√fan_in, 1/√fan_in)  (kaiming_uniform with a = √5)      (fan_out, fan_in)
        b ~ U(−1/√fan_in, 1/√fan_in)                                      (fan_out,) or ()
    """
    rng = np.random.default_rng(seed)
    state = {}
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(fan_in)
        state[f"layers.{k}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in))
        if bias == "per-neuron":
            state[f"layers.{k}.bias"] = rng.uniform(-bound, bound, fan_out)
        elif bias == "shared-frozen":
            state[f"layers.{k}.bias"] = np.asarray(rng.uniform(-bound, bound))
    return state


def initial_state(desc):
    """The run's initial state_dict (float64 numpy arrays), from explicit values or a seed."""
    net, init = desc["network"], desc["init"]
    if "seed" in init:
        return linear_default(net["sizes"], net["bias"], init["seed"])
    state = {}
    for k, w in enumerate(init["weights"]):
        state[f"layers.{k}.weight"] = np.array(w, dtype=np.float64)
        if net["bias"] != "none":
            state[f"layers.{k}.bias"] = np.array(init["biases"][k], dtype=np.float64)
    return state
