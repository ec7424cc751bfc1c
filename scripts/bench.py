"""Benchmark: the manual engine, the torch twin and the lockstep check, side by side in one process.

    python scripts/bench.py            # the table (about six minutes on 2 cores)
    python scripts/bench.py --json     # the same, as one JSON object
    python scripts/bench.py --quick    # fewer repeats and steps, to try it out

Contenders are interleaved (A B C, C B A, ...), each timed run after a short rest; times are
medians over the repeats and each ratio is the median of the ratios within a repeat, so that a
slow spell of the shared machine hits both sides of a ratio alike.
Cases:
  1. the worked example, 10000 updates: manual only, twin only, lockstep;
  2. 784-256-256-10 relu, mse, batch 128, float32, sgd: time per step and GFLOP/s of manual only
     and twin only, next to bare numpy matrix products of the same shapes;
  3. 2048-2048-2048-10, batch 256, float32: the same;
  4. the lockstep's cost per step at three parameter counts spanning 100x;
  5. peak memory of manual only and twin only for case 3 (each in a fresh process);
  6. the LeNet-like convolutional net (Conv2d(1→6, 5) ReLU MaxPool2d(2) Conv2d(6→16, 5) ReLU
     MaxPool2d(2) Flatten Linear(256→120) ReLU Linear(120→84) ReLU Linear(84→10)), input
     1×28×28, batch 64, float32, cross-entropy, sgd, built directly from manual's modules and
     torch.nn's with the same parameters: time per step of each side and GFLOP/s next to bare
     numpy products of the same im2col shapes.
  7. a recurrent net: LSTM(32 → 128), sequence 32, batch 32, batch first, float32, mse on every
     output, sgd: manual's LSTM against torch.nn.LSTM with the same parameters, time per step of
     each side (forward, backward through the whole sequence, update).
  8. the process protocol's cost (--impl "exec:..."): the C reference client (clients/mlp.c, compiled
     with cc -O2) on case 2's network, time per step through the protocol (the batch sent, the
     answer read and checked) against the C program's own step time (forward, backward, update),
     which it measures around its computation and puts in its answer's header: their ratio.

    python scripts/bench.py --case 6   # only the cases named (repeatable)
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch_ref.description import spec  # noqa: E402
from torch_ref.lockstep.run import lockstep  # noqa: E402
import manual.data  # noqa: E402
from manual import activations, container, conv, flatten, losses, modules, optim, pooling, rnn  # noqa: E402
from torch_ref.lockstep.solo import build, train_alone  # noqa: E402

REPEATS = 7             # medians over this many interleaved repeats
CASE1_STEPS = 10000     # the worked example's long run
CONV_BATCH = 64         # case 6
MATMUL_SECONDS = 0.5    # cases 2 and 3: steps per timed run, about this long (about 200 and 6 steps)
SCALING_STEPS = 500     # lockstep steps per repeat for case 4
# Seconds of rest before each timed run, untimed. After its last call a library's worker threads
# spin for a while before they sleep (OpenBLAS's for about 0.1 s, torch's OpenMP pool too): on 2
# cores the next contender, timed at once, would share the machine with them (measured: torch's
# case-2 step 2.2 ms alone, 6.5 ms straight after numpy's).
REST = 0.3
WINDOW = 2.0            # seconds: a timed run is repeated until it has lasted this long


def mlp_desc(sizes, activation, batch, dtype="float32", n_batches=4, steps=10):
    return spec.parse({
        "network": {"sizes": sizes, "activation": activation, "bias": "per-neuron", "loss": "mse"},
        "init": {"seed": 0},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "data": {"random": {"n": batch * n_batches, "seed": 1}, "batch_size": batch},
        "run": {"steps": steps, "dtype": dtype},
    })


def step_flops(sizes, batch):
    """Multiply-adds ×2 of one training step: forward x@W.T, grad_W = g.T@x, and grad_x = g@W for
    every layer but the first (its input needs no gradient)."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    per_layer = [2 * batch * i * o for i, o in layers]
    return 3 * sum(per_layer) - per_layer[0]


def bare_matmuls(sizes, batch, dtype):
    """One step's matrix products, nothing else, on preallocated numpy arrays."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, i)).astype(dtype) for i in sizes[:-1]]
    gs = [rng.standard_normal((batch, o)).astype(dtype) for o in sizes[1:]]
    ws = [rng.standard_normal((o, i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]

    def run():
        for k, (x, g, w) in enumerate(zip(xs, gs, ws)):
            x @ w.T
            g.T @ x
            if k:
                g @ w
    return run


def timed(fn, steps, window=0.0):
    """Seconds per step of fn(steps), run again and again until `window` seconds have passed: a
    cheap contender is then timed over as long a stretch as a dear one, and a slow spell of the
    machine weighs on both alike."""
    runs, t0 = 0, time.perf_counter()
    while True:
        fn(steps)
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= window:
            return elapsed / (runs * steps)


def interleave(contenders, repeats):
    """{name: [seconds per step, one per repeat]}. The contenders run in turn, in alternating
    order (A B C, C B A, A B C, ...), each after a rest, `repeats` times."""
    times = {name: [] for name in contenders}
    for name, (fn, steps) in contenders.items():  # warm-up
        fn(min(steps, 3))
    order = list(contenders.items())
    for _ in range(repeats):
        for name, (fn, steps) in order:
            time.sleep(REST)
            times[name].append(timed(fn, steps, WINDOW))
        order.reverse()
    return times


def medians(times):
    return {name: statistics.median(t) for name, t in times.items()}


def ratio(times, a, b):
    """The median over repeats of a's time over b's: each ratio is taken between runs made
    seconds apart, so a slow spell of the shared machine cancels out."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def solo(desc, side):
    """Train one side from the description's start, `steps` updates (set-up included, as a user sees it)."""
    return lambda steps: train_alone(desc, side, steps)


def steady(desc, side):
    """More steps of one side, built once and warmed up by the first call: the time per step of a
    run in progress, without set-up or the first step's allocations."""
    impl = build(desc, side)
    batches = manual.data.batches(desc, np.dtype(desc["run"]["dtype"]))
    sync = torch.cuda.synchronize if desc["run"]["device"] == "cuda" else (lambda: None)

    def run(steps):
        for _ in range(steps):
            impl.step(*next(batches))
        sync()
    return run


def check(desc):
    def run(steps):
        d = {**desc, "run": {**desc["run"], "steps": steps}}
        result = lockstep(d)
        assert result.ok, str(result.first_mismatch)
    return run


def case1(repeats):
    desc = spec.load(ROOT / "torch_ref" / "specs" / "worked_example.toml")
    times = interleave({"manual": (solo(desc, "manual"), CASE1_STEPS),
                        "twin": (solo(desc, "twin"), CASE1_STEPS),
                        "lockstep": (check(desc), CASE1_STEPS)}, repeats)
    return {"per_step_s": medians(times), "manual/twin": ratio(times, "manual", "twin"),
            "lockstep/twin": ratio(times, "lockstep", "twin")}


def matmul_case(sizes, activation, batch, repeats):
    desc = mlp_desc(sizes, activation, batch)
    bare = bare_matmuls(sizes, batch, np.float32)
    bare_steps = lambda steps: [bare() for _ in range(steps)]
    steps = max(3, round(MATMUL_SECONDS / timed(bare_steps, 3)))  # the same number for all three
    times = interleave({"manual": (steady(desc, "manual"), steps),
                        "twin": (steady(desc, "twin"), steps),
                        "bare_matmul": (bare_steps, steps)}, repeats)
    t, flops = medians(times), step_flops(sizes, batch)
    return {"sizes": sizes, "batch": batch, "flops_per_step": flops, "per_step_s": t,
            "gflop_s": {k: flops / v / 1e9 for k, v in t.items()},
            "manual/twin": ratio(times, "manual", "twin"),
            "manual/bare_matmul_gflops": ratio(times, "bare_matmul", "manual")}  # GFLOP/s: the inverse


def case4(repeats):
    out = []
    for width in (8, 32, 100):  # 153, 2145 and 20301 parameters: 133x from first to last
        sizes = [width, width, width, 1]
        desc = mlp_desc(sizes, "tanh", 16, dtype="float64", steps=SCALING_STEPS)
        times = interleave({"twin": (solo(desc, "twin"), SCALING_STEPS),
                            "lockstep": (check(desc), SCALING_STEPS)}, repeats)
        t = medians(times)
        params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
        out.append({"params": params, "per_step_s": t, "overhead_s": t["lockstep"] - t["twin"],
                    "lockstep/twin": ratio(times, "lockstep", "twin")})
    return out


# Case 6: the LeNet-like net. (in_channels, out_channels, kernel) per convolution, each followed
# by ReLU and MaxPool2d(2); then the fully connected sizes, ReLU between.
LENET_CONVS = [(1, 6, 5), (6, 16, 5)]
LENET_INPUT = (1, 28, 28)


def lenet_sizes(input_shape=LENET_INPUT):
    """(spatial size after each convolution, the fully connected sizes) for an input (C, H, W)."""
    size, after_conv = input_shape[1], []
    for _, _, k in LENET_CONVS:
        size = size - k + 1
        after_conv.append(size)
        size //= 2
    return after_conv, [LENET_CONVS[-1][1] * size * size, 120, 84, 10]


def lenet(seed=0, input_shape=LENET_INPUT, dtype=np.float32):
    """The LeNet-like net twice: manual's Sequential and torch.nn's, the same parameters (torch's
    default initialisation, drawn from `seed`, copied into manual's)."""
    torch.manual_seed(seed)
    fc = lenet_sizes(input_shape)[1]
    def layers(nn, extra):
        out = []
        for c, o, k in LENET_CONVS:
            out += [nn.Conv2d(c, o, k, **extra), nn.ReLU(), nn.MaxPool2d(2)]
        out.append(nn.Flatten())
        for i, (a, b) in enumerate(zip(fc[:-1], fc[1:])):
            out += [nn.Linear(a, b, **extra)] + ([nn.ReLU()] if i < len(fc) - 2 else [])
        return out
    twin = torch.nn.Sequential(*layers(torch.nn, {"dtype": getattr(torch, np.dtype(dtype).name)}))
    mine = container.Sequential(*layers(_ManualNN, {"dtype": dtype}))
    params = dict(mine.named_parameters())
    for name, p in twin.named_parameters():
        params[name].data[...] = p.detach().numpy()
    return mine, twin


class _ManualNN:
    """The manual modules under torch.nn's names, so that lenet() builds both nets from one list."""
    Conv2d, ReLU, MaxPool2d, Flatten, Linear = (conv.Conv2d, activations.ReLU, pooling.MaxPool2d, flatten.Flatten,
                                                modules.Linear)


def lenet_products(batch, input_shape=LENET_INPUT):
    """One training step's matrix products as (m, k, n), (m × k) @ (k × n), in the im2col shapes:
    per convolution, with M = N·Ho·Wo output positions and K = C·kh·kw, the forward
    (M × K) @ (K × O), grad_W (O × M) @ (M × K) and grad_x (M × O) @ (O × K), the first one's
    grad_x left out (the input needs none); then the fully connected layers as step_flops."""
    after_conv, fc = lenet_sizes(input_shape)
    out = []
    for index, ((c, o, k), size) in enumerate(zip(LENET_CONVS, after_conv)):
        m, kk = batch * size * size, c * k * k
        out += [(m, kk, o), (o, m, kk)] + ([(m, o, kk)] if index else [])
    for i, o in zip(fc[:-1], fc[1:]):
        out += [(batch, i, o), (o, batch, i), (batch, o, i)]
    return out


def lenet_flops(batch, input_shape=LENET_INPUT):
    """Multiply-adds ×2 of one training step: what torch's FlopCounterMode counts."""
    return sum(2 * m * k * n for m, k, n in lenet_products(batch, input_shape))


def bare_products(products, dtype):
    """The products, nothing else, on preallocated contiguous numpy arrays."""
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
             for m, k, n in products]

    def run(steps):
        for _ in range(steps):
            for a, b in pairs:
                a @ b
    return run


def lenet_batch(batch, input_shape=LENET_INPUT, dtype=np.float32, seed=1):
    """A fixed batch: standard normal images (N, C, H, W) and class indices (N,)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch,) + tuple(input_shape)).astype(dtype), rng.integers(0, 10, batch)


def lenet_steps(side, net, x, y, lr=0.01):
    """fn(steps): that many training steps of one side on the batch (x, y): zero_grad, forward,
    cross-entropy, backward (the input needs no gradient, on either side), sgd."""
    if side == "twin":
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss, opt = torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=lr)

        def run(steps):
            for _ in range(steps):
                opt.zero_grad()
                loss(net(xt), yt).backward()
                opt.step()
        return run
    loss, opt = losses.CrossEntropyLoss(), optim.SGD(net.parameters(), lr=lr)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            loss(net(x), y)
            net.backward(loss.backward(), input_grad=False)
            opt.step()
    return run


def case6(repeats):
    mine, twin = lenet()
    x, y = lenet_batch(CONV_BATCH)
    bare = bare_products(lenet_products(CONV_BATCH), np.float32)
    manual_steps = lenet_steps("manual", mine, x, y)
    steps = max(3, round(MATMUL_SECONDS / timed(manual_steps, 3)))
    times = interleave({"manual": (manual_steps, steps),
                        "twin": (lenet_steps("twin", twin, x, y), steps),
                        "bare_matmul": (bare, steps)}, repeats)
    t, flops = medians(times), lenet_flops(CONV_BATCH)
    return {"batch": CONV_BATCH, "input": list(LENET_INPUT), "flops_per_step": flops, "per_step_s": t,
            "gflop_s": {k: flops / v / 1e9 for k, v in t.items()},
            "manual/twin": ratio(times, "manual", "twin"),
            "manual/bare_matmul_gflops": ratio(times, "bare_matmul", "manual")}


# Case 7: (input_size, hidden_size, sequence length, batch)
LSTM_CASE = (32, 128, 32, 32)


def lstm_pair(seed=0, sizes=LSTM_CASE):
    """manual's LSTM and torch.nn.LSTM (batch first, float32), torch's random parameters copied."""
    torch.manual_seed(seed)
    f, h = sizes[:2]
    twin = torch.nn.LSTM(f, h, batch_first=True)
    mine = rnn.LSTM(f, h, batch_first=True, dtype=np.float32)
    for (_, p), (_, q) in zip(mine.named_parameters(), twin.named_parameters()):
        p.data[...] = q.detach().numpy()
    return mine, twin


def lstm_steps(side, net, x, y, lr=0.01):
    """fn(steps): training steps of one side on (x, y): zero_grad, forward, mse over every output,
    backward through the whole sequence (the input needs no gradient), sgd."""
    if side == "twin":
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss, opt = torch.nn.MSELoss(), torch.optim.SGD(net.parameters(), lr=lr)

        def run(steps):
            for _ in range(steps):
                opt.zero_grad()
                loss(net(xt)[0], yt).backward()
                opt.step()
        return run
    loss, opt = losses.MSELoss(), optim.SGD(net.parameters(), lr=lr)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad()
            loss(net(x)[0], y)
            net.backward(loss.backward(), input_grad=False)
            opt.step()
    return run


def case7(repeats):
    f, h, t, n = LSTM_CASE
    mine, twin = lstm_pair()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((n, t, f)).astype(np.float32), rng.standard_normal((n, t, h)).astype(np.float32)
    manual_steps = lstm_steps("manual", mine, x, y)
    steps = max(3, round(MATMUL_SECONDS / timed(manual_steps, 3)))
    times = interleave({"manual": (manual_steps, steps), "twin": (lstm_steps("twin", twin, x, y), steps)}, repeats)
    return {"input_size": f, "hidden_size": h, "sequence": t, "batch": n, "per_step_s": medians(times),
            "manual/twin": ratio(times, "manual", "twin")}


PEAK_CHILD = """
import sys, numpy as np
sys.path.insert(0, {root!r})
sys.argv = ["bench"]
from scripts.bench import mlp_desc
from torch_ref.lockstep.solo import build
import manual.data
desc = mlp_desc([2048, 2048, 2048, 10], "relu", 256, steps=3)
impl = build(desc, {side!r})
batches = manual.data.batches(desc, np.float32)
x, y = next(batches)
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
base = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
for _ in range(3):
    impl.step(x, y)
print(hwm() - base)
"""


def case5():
    """Peak resident memory above the state after set-up (model, data, imports), per side."""
    out = {}
    for side in ("manual", "twin"):
        code = PEAK_CHILD.format(root=str(ROOT), side=side)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        out[side] = int(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    out["manual/twin"] = out["manual"] / out["twin"] if out["manual"] and out["twin"] else None
    return out


def environment():
    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            **{name: os.environ.get(name) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}


def table(r):
    """The results as text, one section per case run."""
    us = lambda s: f"{s * 1e6:10.1f} us"
    ms = lambda s: f"{s * 1e3:9.3f} ms"
    lines = ["backprop-check benchmark (medians of interleaved repeats; ratios: medians of per-repeat ratios)", ""]
    if "case1" in r:
        c1 = r["case1"]
        lines += ["1. worked example, 2-2-2 sigmoid, 10000 updates, time per update",
                  f"   manual only {us(c1['per_step_s']['manual'])}   twin only {us(c1['per_step_s']['twin'])}"
                  f"   lockstep {us(c1['per_step_s']['lockstep'])}",
                  f"   manual/twin = {c1['manual/twin']:.3f} (target <= 0.1)   lockstep/twin = {c1['lockstep/twin']:.3f}"
                  " (target <= 1.3)", ""]
    for key, title, target_twin, target_bare in (
            ("case2", "2. 784-256-256-10 relu, mse, batch 128, float32, sgd", 0.6, 0.85),
            ("case3", "3. 2048-2048-2048-10 relu, mse, batch 256, float32, sgd", 0.6, 0.85),
            ("case6", "6. LeNet-like conv net, 1x28x28, batch 64, float32, cross-entropy, sgd", 2, 0.70)):
        if key not in r:
            continue
        c = r[key]
        lines += [title,
                  f"   {'':12} {'per step':>12} {'GFLOP/s':>9}",
                  *[f"   {k:12} {ms(c['per_step_s'][k])} {c['gflop_s'][k]:9.1f}" for k in ("manual", "twin", "bare_matmul")],
                  f"   manual/twin = {c['manual/twin']:.3f} (target <= {target_twin})   manual GFLOP/s / bare matmul ="
                  f" {c['manual/bare_matmul_gflops']:.1%} (target >= {target_bare:.0%})", ""]
    if "case7" in r:
        c = r["case7"]
        lines += [f"7. LSTM {c['input_size']}->{c['hidden_size']}, sequence {c['sequence']}, batch {c['batch']},"
                  " float32, mse on every output, sgd",
                  f"   manual {ms(c['per_step_s']['manual'])}   twin {ms(c['per_step_s']['twin'])}"
                  f"   manual/twin = {c['manual/twin']:.3f} (target <= 2)", ""]
    if "case8" in r and "skipped" in r["case8"]:
        lines += [f"8. the process protocol: skipped ({r['case8']['skipped']})", ""]
    elif "case8" in r:
        c = r["case8"]
        lines += ["8. the process protocol, the C client on case 2's network (784-256-256-10, batch 128, float32)",
                  f"   through exec: {ms(c['per_step_s']['exec'])}   the program's own step {ms(c['per_step_s']['program'])}"
                  f"   exec/program = {c['exec/program']:.3f} (target <= 1.1)", ""]
    if "case4" in r:
        lines.append("4. lockstep cost per step (float64, tanh, batch 16)")
        lines.append(f"   {'params':>8} {'twin only':>13} {'lockstep':>13} {'overhead':>13} {'lockstep/twin':>14}")
        for c in r["case4"]:
            lines.append(f"   {c['params']:8d} {us(c['per_step_s']['twin'])} {us(c['per_step_s']['lockstep'])}"
                         f" {us(c['overhead_s'])} {c['lockstep/twin']:14.3f}")
        first, last = r["case4"][0], r["case4"][-1]
        growth = last["overhead_s"] / first["overhead_s"]
        lines.append(f"   overhead grew {growth:.2f}x while the parameter count grew "
                     f"{last['params'] / first['params']:.0f}x (target: no faster)")
        lines.append("")
    if "case5" in r:
        c5 = r["case5"]
        mb = lambda b: "n/a" if b is None else f"{b / 2**20:.1f} MiB"
        ratio = "n/a" if c5["manual/twin"] is None else f"{c5['manual/twin']:.2f}"
        lines += ["5. peak memory above set-up, case 3 (fresh process per side)",
                  f"   manual {mb(c5['manual'])}   twin {mb(c5['twin'])}   manual/twin = {ratio} (target <= 1)"]
    return "\n".join(lines).rstrip("\n")


def case8(repeats, steps=10):
    """The process protocol's cost per step: the C client's step through exec: against its own."""
    import shutil
    import tempfile
    from torch_ref.implementation import process
    import manual.init
    cc = shutil.which("cc")
    if cc is None:
        return {"skipped": "no C compiler (cc)"}
    desc = spec.parse({"network": {"sizes": [784, 256, 256, 10], "activation": ["relu", "relu", "identity"],
                                   "loss": "mse"}, "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.01},
                       "data": {"random": {"n": 1280, "seed": 1}, "batch_size": 128},
                       "run": {"steps": 10, "dtype": "float32"}})
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "mlp"
        subprocess.run([cc, "-O2", "-o", str(exe), str(ROOT / "clients" / "mlp.c"), "-lm"], check=True)
        program = process.Program(str(exe), desc)
        try:
            program.load_state_dict({k: v.astype(np.float32) for k, v in manual.init.initial_state(desc).items()})
            batches = manual.data.batches(desc, np.float32)
            program.train_step(*next(batches))  # warm-up
            walls, owns = [], []
            for _ in range(repeats * steps):
                x, y = next(batches)
                time.sleep(REST / 10)
                start = time.perf_counter()
                program.train_step(x, y)
                walls.append(time.perf_counter() - start)
                owns.append(program.header["seconds"])
        finally:
            program.close()
    ratios = [w / o for w, o in zip(walls, owns)]
    return {"per_step_s": {"exec": statistics.median(walls), "program": statistics.median(owns)},
            "exec/program": statistics.median(ratios)}


CASES = {
    "1": lambda: case1(REPEATS),
    "2": lambda: matmul_case([784, 256, 256, 10], ["relu", "relu", "identity"], 128, REPEATS),
    "3": lambda: matmul_case([2048, 2048, 2048, 10], ["relu", "relu", "identity"], 256, max(3, REPEATS - 2)),
    "4": lambda: case4(REPEATS),
    "5": lambda: case5(),
    "6": lambda: case6(REPEATS),
    "7": lambda: case7(REPEATS),
    "8": lambda: case8(REPEATS),
}


def main():
    global REPEATS, CASE1_STEPS, MATMUL_SECONDS, SCALING_STEPS, WINDOW
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--case", action="append", choices=sorted(CASES),
                   help="run only this case (repeatable; default: all of them, in order)")
    args = p.parse_args()
    if args.quick:
        REPEATS, CASE1_STEPS, MATMUL_SECONDS, SCALING_STEPS, WINDOW = 3, 2000, 0.1, 100, 0.2
    r = {"environment": environment(), "repeats": REPEATS}
    for name in sorted(set(args.case or CASES)):
        r[f"case{name}"] = CASES[name]()
    print(json.dumps(r, indent=2) if args.json else table(r))


if __name__ == "__main__":
    main()
