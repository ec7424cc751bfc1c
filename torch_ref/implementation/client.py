"""The process protocol's Python client: a plug-in (an object with load_state_dict / train_step)
in its own process (its own interpreter, JAX, another numpy), driven by `--impl "exec:..."`.

    backprop-check run SPEC --impl "exec:python3 -m torch_ref.implementation.client path/to/file.py:factory"

or, from a script of your own that has its implementation at hand (docs/protocol.md):

    from torch_ref.implementation.client import serve
    serve(MyNet)        # MyNet(desc) -> an object with load_state_dict, train_step

`serve` answers init (calls factory(description), then load_state_dict(state)), step
(train_step(x, y) or train_step(x, y, masks=...)), load (load_state_dict / load_optimizer_state)
until close. What the implementation prints goes to stderr (stdout carries the protocol); an
exception it raises is answered as an "error" message naming it, and the program ends.
Numpy only: wire.py is the format.
"""
import os
import sys

import numpy as np

from . import wire

GROUPS = ("grads", "state_dict", "deltas", "forward", "optimizer_state")


def serve(factory, stdin=None, stdout=None):
    """Answer the harness's messages on stdin/stdout (binary streams) until close. Returns 0."""
    stdin = stdin or sys.stdin.buffer
    if stdout is None:  # the protocol's own descriptor; prints (Python's and C's) go to stderr
        stdout = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    impl = None
    while True:
        message = wire.read_message(stdin)
        if message is None or message[0]["message"] == "close":
            return 0
        header, arrays = message
        try:
            impl, answer = answered(impl, factory, header, arrays)
        except Exception as e:  # the implementation's own failure: said, and the end of the run
            _write(stdout, wire.encode("error", text=f"{type(e).__name__}: {e}"))
            return 1
        _write(stdout, answer)


def answered(impl, factory, header, arrays):
    """(the implementation, the bytes of its answer) to one message of the harness."""
    kind = header["message"]
    if kind == "init":
        impl = factory(header["description"])
        impl.load_state_dict(_group(arrays, "state_dict"))
        return impl, wire.encode("ready")
    if kind == "load":
        state, optim = _group(arrays, "state_dict"), _group(arrays, "optimizer_state")
        if state:
            impl.load_state_dict(state)
        if optim and callable(getattr(impl, "load_optimizer_state", None)):
            impl.load_optimizer_state(optim)
        return impl, wire.encode("ready")
    if kind == "step":
        masks = _group(arrays, "masks")
        r = impl.train_step(arrays["x"], arrays["y"], masks=masks) if masks else impl.train_step(arrays["x"], arrays["y"])
        return impl, wire.encode("result", result_arrays(r, arrays["x"].dtype))
    raise ValueError(f"unknown message {kind!r}")


def result_arrays(result, dtype):
    """A train_step result as the protocol's named arrays, in the run's dtype."""
    out = [("output", np.asarray(result["output"], dtype=dtype)), ("loss", np.asarray(result["loss"], dtype=dtype))]
    for group in GROUPS:
        for name, value in (result.get(group) or {}).items():
            out.append((f"{group}/{name}", np.asarray(value, dtype=dtype)))
    return out


def _group(arrays, group):
    prefix = group + "/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _write(stream, data):
    stream.write(data)
    stream.flush()


def main(argv=None):
    """`python -m torch_ref.implementation.client TARGET`: serve the plug-in TARGET names."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m torch_ref.implementation.client package.module:factory|path/to/file.py:factory",
              file=sys.stderr)
        return 2
    from .plugin import load
    return serve(load(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
