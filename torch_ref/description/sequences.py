"""[data] sequence = {name, n, length, seed, ...}: a sequence set of manual/sequences.py, its fields
checked and its fit to the network:

    adding  {n, length, seed}: samples (length, 2) of reals = network.input_shape, one output
            (a regression: not a class-index loss)
    copy    {n, length, symbols, string, seed}: tokens (length,), targets per time step, vocabulary
            symbols + 2 (blank, delimiter, the symbols); length ≥ 2·string + 1
    chars   {n, length, seed, target}: windows (length,) of the shipped text's character ids,
            targets the next characters (target "every", the default: (length,) per sample) or
            the character after the window ("last": one class per sequence, a classifier's);
            the text cut into data.batch_size streams (manual/sequences.py)

A token set (copy, chars) needs an Embedding first (integer inputs: input_shape = [length]) with
num_embeddings at least the vocabulary, a class-index loss (cross_entropy, nll), and an output of
(length, C) per sample with C at least the vocabulary: the loss over every time step (chars with
target "last": (C,) per sample).
"""
from manual.sequences import CHARS_TARGETS, SEQUENCE_SETS, max_chars_samples, vocabulary_size

from ..errors import SpecError, field_key, show
from .checks import choice, get, integer
from .fits import class_index_targets

DEFAULTS = {"adding": {"n": 200, "length": 20, "seed": 0},
            "copy": {"n": 200, "length": 12, "symbols": 8, "string": 4, "seed": 0},
            "chars": {"n": 64, "length": 32, "seed": 0, "target": "every"}}


def check_sequence(t, network, batch_size):
    """The normalised sequence set (defaults filled in), refused naming the field where a field is
    unknown or out of range, or where the set does not fit the network."""
    if not isinstance(t, dict):
        raise SpecError("data.sequence", f"expected a table {{name = ..., n = ..., length = ...}}, got {show(t)}")
    name = choice(get(t, "data.sequence", "name"), SEQUENCE_SETS, "data.sequence.name")
    defaults = DEFAULTS[name]
    for key in t:
        if key != "name" and key not in defaults:
            raise SpecError(f"data.sequence.{field_key(key)}", f"unknown field of {name}; expected name, "
                                                               f"{', '.join(defaults)}")
    s = {"name": name, **defaults, **{k: v for k, v in t.items() if k != "name"}}
    for key in defaults:
        if key == "target":
            choice(s[key], CHARS_TARGETS, "data.sequence.target")
        else:
            integer(s[key], f"data.sequence.{key}", 0 if key == "seed" else 1)
    if name == "adding" and s["length"] < 2:
        raise SpecError("data.sequence.length", f"the adding problem marks one position in each half: length >= 2,"
                                                f" got {s['length']}")
    if name == "copy" and s["length"] < 2 * s["string"] + 1:
        raise SpecError("data.sequence.length", f"the copy task needs the string ({s['string']}), the delimiter and "
                                                f"the string again: length >= {2 * s['string'] + 1}, got {s['length']}")
    if name == "chars" and s["n"] > max_chars_samples(s["length"], batch_size):
        raise SpecError("data.sequence.n", f"the shipped text holds at most {max_chars_samples(s['length'], batch_size)}"
                                           f" windows of length {s['length']} in {batch_size} streams"
                                           f" (data.batch_size), got {s['n']}")
    sequence_fits(s, network)
    return s


def sequence_fits(s, network):
    """Refuse a set whose samples are not the network's input, or whose targets do not fit its output."""
    name, length = s["name"], s["length"]
    if "layers" not in network:
        raise SpecError("data.sequence", "sequences are for a network given as layers (input_shape and layers)")
    want, out, first = network["input_shape"], network["output_shape"], network["layers"][0]
    if name == "adding":
        if want != [length, 2]:
            raise SpecError("data.sequence.length", f"adding samples are (length, 2) = {[length, 2]}, but"
                                                    f" network.input_shape = {want}")
        if class_index_targets(network) or out != [1]:
            raise SpecError("data.sequence.name", f"adding is a regression of one output (mse, say); the network"
                                                  f" gives {out} per sample with loss {network['loss']!r}")
        return
    vocab = vocabulary_size(name, s)
    if want != [length]:
        raise SpecError("data.sequence.length", f"{name} samples are {length} token ids, (length,), but"
                                                f" network.input_shape = {want}")
    if first["type"] != "Embedding":
        raise SpecError("network.layers[0].type", f"{name} samples are integer token ids: the first module must be"
                                                  f" an Embedding, got {first['type']}")
    if first["num_embeddings"] < vocab:
        raise SpecError("network.layers[0].num_embeddings", f"{name} has a vocabulary of {vocab} tokens; "
                                                            f"num_embeddings = {first['num_embeddings']} does not cover it")
    if not class_index_targets(network):
        raise SpecError("network.loss", f"{name}'s targets are class indices per time step: use cross_entropy or nll")
    if s.get("target") == "last":
        if len(out) != 1 or out[0] < vocab:
            raise SpecError("data.sequence.target", f"target = \"last\" gives one class per sequence over {vocab}"
                                                    f" tokens: the last module's output per sample must be (C,),"
                                                    f" C >= {vocab} (a LastStep, say), got {out}")
        return
    if len(out) != 2 or out[0] != length or out[1] < vocab:
        raise SpecError("data.sequence.name", f"{name} has targets per time step over {vocab} tokens: the last"
                                              f" module's output per sample must be (length, C) = ({length}, C >= {vocab}),"
                                              f" got {out}")


def token_inputs(network):
    """True where the network takes integer token ids (an Embedding first)."""
    return "layers" in network and network["layers"][0]["type"] == "Embedding"
