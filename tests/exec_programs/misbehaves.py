"""A client of the process protocol that answers correctly (the manual engine, through
torch_ref.implementation.client) until step AT, then does MODE (tests/test_exec_failures.py).

    python misbehaves.py MODE AT PIDFILE
"""
import os
import signal
import struct
import sys
import time

import numpy as np

import manual.trainer
from torch_ref.implementation import client, wire


def misbehave(mode, impl, arrays, out):
    """The answer to the step: bytes to write (None: behave), or an exit/hang right here."""
    if mode == "exit":
        sys.exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(60)
    if mode == "garbage":
        return b"Traceback (most recent call last):\n"
    if mode == "not_json":
        return struct.pack("<I", 5) + b"hello"
    if mode == "wrong_message":
        return wire.encode("ready")
    if mode == "error":
        return wire.encode("error", text="ZeroDivisionError: in my backward")
    r = impl.train_step(arrays["x"], arrays["y"])
    named = client.result_arrays(r, arrays["x"].dtype)
    if mode == "float32":
        named = [(k, v.astype(np.float32)) for k, v in named]
    elif mode == "unknown_name":
        named = [(k.replace("grads/layers.0.weight", "grads/layers.9.weight"), v) for k, v in named]
    elif mode == "transposed":
        named = [(k, v.T if k == "grads/layers.0.weight" else v) for k, v in named]
    elif mode == "no_output":
        named = [(k, v) for k, v in named if k != "output"]
    elif mode == "stray_array":
        named.append(("gradients/layers.0.weight", named[0][1]))
    elif mode == "truncated":
        out.write(wire.encode("result", named)[:-8])
        out.flush()
        sys.exit(0)
    return wire.encode("result", named)


def main(mode, at, pidfile, stdin=None, stdout=None, stderr=None):
    """Serve until close (or misbehave at step AT). The streams are the process's own unless given
    (tests/test_exec_failures.py serves the contract's cases from a thread, over pipes)."""
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    print(f"started in mode {mode}", file=stderr or sys.stderr, flush=True)
    out, impl, it = stdout or sys.stdout.buffer, None, -1
    while True:
        message = wire.read_message(stdin or sys.stdin.buffer)
        if message is None or message[0]["message"] == "close":
            return 0
        header, arrays = message
        it += header["message"] == "step"
        answer = misbehave(mode, impl, arrays, out) if header["message"] == "step" and it == at else None
        if answer is None:
            impl, answer = client.answered(impl, manual.trainer.build, header, arrays)
        out.write(answer)
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
