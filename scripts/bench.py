"""Benchmark: the manual engine, the torch twin and the lockstep check, side by side in one process.

    python scripts/bench.py            # the table (several minutes on 2 cores)
    python scripts/bench.py --json     # the same, as one JSON object
    python scripts/bench.py --quick    # fewer repeats and steps (under a minute), to see a regression
    python scripts/bench.py --docs     # a full run, quoted in docs/speed.md (its JSON: docs/assets/bench.json)
    python scripts/bench.py --from-json FILE   # the table of an earlier --json run

Contenders are interleaved (A B C, C B A, ...), each timed run after a short rest; times are
medians over the repeats and each ratio is the median of the ratios within a repeat, so that a
slow spell of the shared machine hits both sides of a ratio alike.
Cases:
  1. the worked example, 10000 updates: manual only, twin only, lockstep;
  2. 784-256-256-10 relu, mse, batch 128, float32, sgd: time per step and GFLOP/s of manual only
     and twin only, next to bare numpy matrix products of the same shapes and to the numpy floor
     (scripts/bench_floor.py: the same step in one function over buffers allocated once, the
     measured limit of numpy's elementwise passes); the manual step's time phase by phase;
  3. 2048-2048-2048-10, batch 256, float32: the same;
  4. the lockstep against manual only and twin only at three parameter counts spanning 100x:
     lockstep / (manual + twin), the time it adds per compared value, and its comparison's alone;
  5. peak memory of manual only and twin only for case 3 (each in a fresh process);
  6. the LeNet-like convolutional net (Conv2d(1→6, 5) ReLU MaxPool2d(2) Conv2d(6→16, 5) ReLU
     MaxPool2d(2) Flatten Linear(256→120) ReLU Linear(120→84) ReLU Linear(84→10)), input
     1×28×28, batch 64, float32, cross-entropy, sgd, built directly from manual's modules and
     torch.nn's with the same parameters: time per step of each side and GFLOP/s next to bare
     numpy products of the same im2col shapes.
  7. a recurrent net: LSTM(32 → 128), sequence 32, batch 32, batch first, float32, mse on every
     output, sgd: manual's LSTM against torch.nn.LSTM with the same parameters, time per step of
     each side (forward, backward through the whole sequence, update), and GFLOP/s next to bare
     numpy products of the step's shapes (lstm_products).
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
import manual.init  # noqa: E402
from manual import activations, container, conv, flatten, losses, modules, optim, pooling, rnn  # noqa: E402
from torch_ref.lockstep.solo import build, train_alone  # noqa: E402
from torch_ref.lockstep.checker import Checker  # noqa: E402
from torch_ref.lockstep.loop import AHEAD_BYTES, AHEAD_ITERATIONS  # noqa: E402
from torch_ref.testing import tolerance  # noqa: E402
from scripts.bench_floor import FloorMLP  # noqa: E402

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
    forward, backward = bare_halves(sizes, batch, dtype)

    def run():
        forward()
        backward()
    return run


def bare_halves(sizes, batch, dtype):
    """One step's forward products and its backward ones, apart (bare_matmuls runs both; the
    profile times each): forward x @ W.T per layer; backward grad_W = g.T @ x per layer and
    grad_x = g @ W for every layer but the first."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, i)).astype(dtype) for i in sizes[:-1]]
    gs = [rng.standard_normal((batch, o)).astype(dtype) for o in sizes[1:]]
    ws = [rng.standard_normal((o, i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]

    def forward():
        for x, w in zip(xs, ws):
            x @ w.T

    def backward():
        for k, (x, g, w) in enumerate(zip(xs, gs, ws)):
            g.T @ x
            if k:
                g @ w
    return forward, backward


def floor(desc):
    """fn(steps): steps of the numpy floor (bench_floor.FloorMLP) on the description's batches."""
    dtype = np.dtype(desc["run"]["dtype"])
    state = manual.init.initial_state(desc)
    f = FloorMLP(state, desc["data"]["batch_size"], desc["optimizer"]["lr"], dtype)
    batches = manual.data.batches(desc, dtype)

    def run(steps):
        for _ in range(steps):
            f.step(*next(batches))
    return run


def sections(desc, steps):
    """Where the manual step's time goes: seconds per step in each phase of Trainer.step (zero_grad,
    forward, loss and its gradient, backward, the optimizer), timed phase by phase over `steps`
    steady steps (one run, after a warm-up; a profile, not a ratio)."""
    impl = build(desc, "manual")
    batches = manual.data.batches(desc, np.dtype(desc["run"]["dtype"]))
    spent = dict.fromkeys(("zero_grad", "forward", "loss", "backward", "optimizer"), 0.0)
    clock = time.perf_counter
    for k in range(steps + 3):
        if k == 3:
            spent = dict.fromkeys(spent, 0.0)
        x, y = next(batches)
        t0 = clock()
        impl.optimizer.zero_grad()
        t1 = clock()
        out = impl.model.forward(x)
        t2 = clock()
        impl.loss_fn.forward(out, y)
        g = impl.loss_fn.backward()
        t3 = clock()
        impl.model.backward(g)
        t4 = clock()
        impl.optimizer_step()
        t5 = clock()
        for name, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            spent[name] += dt
    return {name: dt / steps for name, dt in spent.items()}


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


def results(desc):
    """fn(steps): both sides' train_step from the description's start (set-up included, as for
    solo and check) on the same batches, in the lockstep's order (the twin through a chunk of
    iterations, then the manual engine through the same ones, lockstep.loop's chunk size), their
    results kept until the chunk ends and then dropped: the lockstep with nothing compared, its
    measured limit."""
    chunk = max(1, min(AHEAD_ITERATIONS, AHEAD_BYTES // (16 * compared_elements(desc))))  # (not timed)

    def run(steps):
        twin, mine = build(desc, "twin"), build(desc, "manual")
        batches = manual.data.batches(desc, np.dtype(desc["run"]["dtype"]))
        for start in range(0, steps, chunk):
            data = [next(batches) for _ in range(min(chunk, steps - start))]
            kept = [twin.train_step(x, y) for x, y in data]
            kept += [mine.train_step(x, y) for x, y in data]
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
                        "lockstep": (check(desc), CASE1_STEPS),
                        "results": (results(desc), CASE1_STEPS)}, repeats)
    return {"per_step_s": medians(times), "manual/twin": ratio(times, "manual", "twin"),
            "lockstep/twin": ratio(times, "lockstep", "twin"), "results/twin": ratio(times, "results", "twin")}


def matmul_case(sizes, activation, batch, repeats):
    """Each side's steady step, the bare products and the numpy floor (bench_floor.py), interleaved;
    then the manual step's profile (sections) next to the bare forward and backward products."""
    desc = mlp_desc(sizes, activation, batch)
    bare = bare_matmuls(sizes, batch, np.float32)
    bare_steps = lambda steps: [bare() for _ in range(steps)]
    steps = max(3, round(MATMUL_SECONDS / timed(bare_steps, 3)))  # the same number for all four
    times = interleave({"manual": (steady(desc, "manual"), steps),
                        "twin": (steady(desc, "twin"), steps),
                        "bare_matmul": (bare_steps, steps),
                        "numpy_floor": (floor(desc), steps)}, repeats)
    t, flops = medians(times), step_flops(sizes, batch)
    forward, backward = bare_halves(sizes, batch, np.float32)
    profile = {**sections(desc, steps),
               "forward_products": timed(lambda n: [forward() for _ in range(n)], steps, WINDOW),
               "backward_products": timed(lambda n: [backward() for _ in range(n)], steps, WINDOW)}
    return {"sizes": sizes, "batch": batch, "flops_per_step": flops, "per_step_s": t,
            "gflop_s": {k: flops / v / 1e9 for k, v in t.items()},
            "manual/twin": ratio(times, "manual", "twin"),
            "manual/bare_matmul_gflops": ratio(times, "bare_matmul", "manual"),  # GFLOP/s: the inverse
            "numpy_floor/bare_matmul_gflops": ratio(times, "bare_matmul", "numpy_floor"),
            "profile_s": profile}


def compared_elements(desc):
    """The number of values the lockstep compares per iteration (every stage's tensors)."""
    m, r = build(desc, "manual"), build(desc, "twin")
    x, y = next(manual.data.batches(desc, np.dtype(desc["run"]["dtype"])))
    mr, rr = m.train_step(x, y), r.train_step(x, y)
    return Checker(mr, rr, *tolerance(desc["run"]["dtype"])).size  # (the loss included)


def comparison_cost(desc, iterations=64, repeats=5):
    """Seconds per compared value of the lockstep's comparison alone (lockstep.checker's passes) on
    64 iterations of both sides' results, from the same start on the same batches (what the
    lockstep compares, rounding differences included): the least of `repeats` runs."""
    twin, mine = build(desc, "twin"), build(desc, "manual")
    batches = manual.data.batches(desc, np.dtype(desc["run"]["dtype"]))
    steps = []
    for it in range(iterations):
        x, y = next(batches)
        steps.append((it, mine.train_step(x, y), twin.train_step(x, y)))
    best = float("inf")
    for _ in range(repeats):
        checker = Checker(steps[0][1], steps[0][2], *tolerance(desc["run"]["dtype"]))
        t0 = time.perf_counter()
        assert checker.check_many(steps) is None
        best = min(best, time.perf_counter() - t0)
    return best / iterations / checker.size


def case4(repeats):
    """The lockstep against its two sides run alone, at three parameter counts: lockstep / (manual +
    twin), and what the check adds per compared element (and its comparison's share of it)."""
    out = []
    for width in (8, 32, 100):  # 153, 2145 and 20301 parameters: 133x from first to last
        sizes = [width, width, width, 1]
        desc = mlp_desc(sizes, "tanh", 16, dtype="float64", steps=SCALING_STEPS)
        times = interleave({"manual": (solo(desc, "manual"), SCALING_STEPS),
                            "twin": (solo(desc, "twin"), SCALING_STEPS),
                            "lockstep": (check(desc), SCALING_STEPS),
                            "results": (results(desc), SCALING_STEPS)}, repeats)
        t = medians(times)
        params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
        elements = compared_elements(desc)
        overhead = t["lockstep"] - t["manual"] - t["twin"]
        both = lambda key: statistics.median(v / (m + tw) for v, m, tw in  # noqa: E731
                                             zip(times[key], times["manual"], times["twin"]))
        out.append({"params": params, "compared_elements": elements, "per_step_s": t, "overhead_s": overhead,
                    "overhead_per_element_s": overhead / elements, "comparison_per_element_s": comparison_cost(desc),
                    "lockstep/twin": ratio(times, "lockstep", "twin"), "lockstep/(manual+twin)": both("lockstep"),
                    "results/(manual+twin)": both("results")})
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


def lstm_products(sizes=LSTM_CASE):
    """One training step's matrix products of a one-layer LSTM, as (m, k, n), with G = 4·hidden:
    the input projection of every time step, (N·T × F) @ (F × G); the recurrent product of each
    step, (N × H) @ (H × G); the gradient of h at each step but the first, (N × G) @ (G × H); the
    weight gradients, (G × N·T) @ (N·T × F) and (G × N·T) @ (N·T × H). The input needs no
    gradient. What torch's FlopCounterMode counts on an unrolled LSTMCell (tests/test_bench.py)."""
    f, h, t, n = sizes
    g = 4 * h
    return [(n * t, f, g)] + [(n, h, g)] * t + [(n, g, h)] * (t - 1) + [(g, n * t, f), (g, n * t, h)]


def case7(repeats):
    f, h, t, n = LSTM_CASE
    mine, twin = lstm_pair()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((n, t, f)).astype(np.float32), rng.standard_normal((n, t, h)).astype(np.float32)
    manual_steps = lstm_steps("manual", mine, x, y)
    steps = max(3, round(MATMUL_SECONDS / timed(manual_steps, 3)))
    products = lstm_products()
    times = interleave({"manual": (manual_steps, steps), "twin": (lstm_steps("twin", twin, x, y), steps),
                        "bare_matmul": (bare_products(products, np.float32), steps)}, repeats)
    t_, flops = medians(times), sum(2 * a * b * c for a, b, c in products)
    return {"input_size": f, "hidden_size": h, "sequence": t, "batch": n, "flops_per_step": flops, "per_step_s": t_,
            "gflop_s": {k: flops / v / 1e9 for k, v in t_.items()},
            "manual/twin": ratio(times, "manual", "twin"),
            "manual/bare_matmul_gflops": ratio(times, "bare_matmul", "manual")}


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


# The targets (issue "Speed, second round"; cases 6 and 7 keep their layer issues' own): per case, the
# ratio's key in the case's results, "<=" or ">=", the bound. Case 4's holds at every size.
TARGETS = {
    "case1": [("manual/twin", "<=", 0.1), ("lockstep/twin", "<=", 1.3)],
    "case2": [("manual/twin", "<=", 0.8), ("manual/bare_matmul_gflops", ">=", 0.90)],
    "case3": [("manual/twin", "<=", 1.0), ("manual/bare_matmul_gflops", ">=", 0.90)],
    "case4": [("lockstep/(manual+twin)", "<=", 1.15)],
    "case5": [("manual/twin", "<=", 1.0)],
    "case6": [("manual/twin", "<=", 2.0), ("manual/bare_matmul_gflops", ">=", 0.70)],
    "case7": [("manual/twin", "<=", 2.0)],
    "case8": [("exec/program", "<=", 1.1)],
}


def verdicts(r):
    """[(case, ratio, value, op, bound, held)] for every target of the cases in the results `r`
    (case 4: one per size)."""
    out = []
    for case, targets in TARGETS.items():
        results = r.get(case)
        if not results or (isinstance(results, dict) and "skipped" in results):
            continue
        for key, op, bound in targets:
            for c in results if isinstance(results, list) else [results]:
                value = c.get(key)
                held = value is not None and (value <= bound if op == "<=" else value >= bound)
                out.append((case if not isinstance(results, list) else f"{case} ({c['params']} params)",
                            key, value, op, bound, held))
    return out


def _target(r, case, key):
    """ "(target <= 0.8: held)" for the case's target on `key`, "" where it has none."""
    for k, op, bound in TARGETS.get(case, ()):
        if k == key:
            value = r[case][key]
            held = value is not None and (value <= bound if op == "<=" else value >= bound)
            shown = f"{bound:.0%}" if key.endswith("gflops") else f"{bound:g}"
            return f" (target {op} {shown}: {'held' if held else 'MISSED'})"
    return ""


def table(r):
    """The results as text, one section per case run, each ratio next to its target; then the
    targets held."""
    us = lambda s: f"{s * 1e6:10.1f} us"  # noqa: E731
    ms = lambda s: f"{s * 1e3:9.3f} ms"  # noqa: E731
    env = r.get("environment", {})
    lines = ["backprop-check benchmark (medians of interleaved repeats; ratios: medians of per-repeat ratios)",
             f"python {env.get('python')}, numpy {env.get('numpy')}, torch {env.get('torch')}, {env.get('machine')},"
             f" {env.get('cpu_count')} cores, torch threads {env.get('torch_threads')}; {r.get('repeats')} repeats", ""]
    if "case1" in r:
        c1 = r["case1"]
        lines += ["1. worked example, 2-2-2 sigmoid, 10000 updates, time per update",
                  f"   manual only {us(c1['per_step_s']['manual'])}   twin only {us(c1['per_step_s']['twin'])}"
                  f"   lockstep {us(c1['per_step_s']['lockstep'])}",
                  f"   manual/twin = {c1['manual/twin']:.3f}{_target(r, 'case1', 'manual/twin')}",
                  f"   lockstep/twin = {c1['lockstep/twin']:.3f}{_target(r, 'case1', 'lockstep/twin')}",
                  f"   the measured limit, both sides' train_step with nothing compared: results/twin ="
                  f" {c1['results/twin']:.3f}", ""]
    for key, title in (("case2", "2. 784-256-256-10 relu, mse, batch 128, float32, sgd"),
                       ("case3", "3. 2048-2048-2048-10 relu, mse, batch 256, float32, sgd"),
                       ("case6", "6. LeNet-like conv net, 1x28x28, batch 64, float32, cross-entropy, sgd"),
                       ("case7", "7. LSTM {input_size}->{hidden_size}, sequence {sequence}, batch {batch}, float32,"
                                 " mse on every output, sgd")):
        if key not in r:
            continue
        c = r[key]
        names = [k for k in ("manual", "twin", "bare_matmul", "numpy_floor") if k in c["per_step_s"]]
        lines += [title.format(**c),
                  f"   {'':12} {'per step':>12} {'GFLOP/s':>9}",
                  *[f"   {k:12} {ms(c['per_step_s'][k])} {c['gflop_s'][k]:9.1f}" for k in names],
                  f"   manual/twin = {c['manual/twin']:.3f}{_target(r, key, 'manual/twin')}",
                  f"   manual GFLOP/s / bare products' = {c['manual/bare_matmul_gflops']:.1%}"
                  f"{_target(r, key, 'manual/bare_matmul_gflops')}"]
        if "numpy_floor/bare_matmul_gflops" in c:
            lines.append(f"   the measured limit, numpy floor GFLOP/s / bare products' ="
                         f" {c['numpy_floor/bare_matmul_gflops']:.1%} (scripts/bench_floor.py)")
        if "profile_s" in c:
            p = c["profile_s"]
            lines.append(f"   manual step, phase by phase: forward {ms(p['forward']).strip()} (its bare products"
                         f" {ms(p['forward_products']).strip()}), loss {ms(p['loss']).strip()}, backward"
                         f" {ms(p['backward']).strip()} (bare products {ms(p['backward_products']).strip()}),"
                         f" optimizer {ms(p['optimizer']).strip()}, zero_grad {ms(p['zero_grad']).strip()}")
        lines.append("")
    if "case8" in r and "skipped" in r["case8"]:
        lines += [f"8. the process protocol: skipped ({r['case8']['skipped']})", ""]
    elif "case8" in r:
        c = r["case8"]
        lines += ["8. the process protocol, the C client on case 2's network (784-256-256-10, batch 128, float32)",
                  f"   through exec: {ms(c['per_step_s']['exec'])}   the program's own step {ms(c['per_step_s']['program'])}",
                  f"   exec/program = {c['exec/program']:.3f}{_target(r, 'case8', 'exec/program')}", ""]
    if "case4" in r:
        lines.append("4. the lockstep against its two sides alone (float64, tanh, batch 16), time per step")
        lines.append(f"   {'params':>8} {'compared':>9} {'manual':>13} {'twin':>13} {'lockstep':>13}"
                     f" {'lockstep/(manual+twin)':>23} {'results/(m+t)':>14} {'added/value':>12} {'comparison':>11}")
        for c in r["case4"]:
            t = c["per_step_s"]
            lines.append(f"   {c['params']:8d} {c['compared_elements']:9d} {us(t['manual'])} {us(t['twin'])}"
                         f" {us(t['lockstep'])} {c['lockstep/(manual+twin)']:23.3f} {c['results/(manual+twin)']:14.3f}"
                         f" {c['overhead_per_element_s'] * 1e9:9.1f} ns {c['comparison_per_element_s'] * 1e9:8.1f} ns")
        held = all(v[5] for v in verdicts({"case4": r["case4"]}))
        lines.append(f"   target: lockstep/(manual+twin) <= 1.15 at every size: {'held' if held else 'MISSED'}")
        lines.append("   results/(m+t): both sides' train_step with nothing compared (the measured limit);"
                     " added/value: (lockstep - manual - twin) per compared value; comparison: the"
                     " comparison's passes alone, per value")
        lines.append("")
    if "case5" in r:
        c5 = r["case5"]
        mb = lambda b: "n/a" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
        ratio = "n/a" if c5["manual/twin"] is None else f"{c5['manual/twin']:.2f}"
        lines += ["5. peak memory above set-up, case 3 (fresh process per side)",
                  f"   manual {mb(c5['manual'])}   twin {mb(c5['twin'])}   manual/twin = {ratio}"
                  f"{_target(r, 'case5', 'manual/twin') if c5['manual/twin'] is not None else ''}", ""]
    rows = verdicts(r)
    missed = [f"{case} {key}" for case, key, _, _, _, held in rows if not held]
    lines.append(f"targets held: {len(rows) - len(missed)} of {len(rows)}"
                 + (f"; missed: {', '.join(missed)}" if missed else ""))
    return "\n".join(lines)


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


DOC = ROOT / "docs" / "speed.md"
RUN = ROOT / "docs" / "assets" / "bench.json"  # the quoted run, as --json gave it
BEGIN, END = "<!-- bench: written by scripts/bench.py --docs -->", "<!-- /bench -->"


def write_docs(r):
    """The run's JSON into docs/assets/bench.json and its table between the markers of
    docs/speed.md (each written whole, then renamed)."""
    doc = DOC.read_text()
    block = f"{BEGIN}\n```\n{table(r)}\n```\n{END}"
    i, j = doc.index(BEGIN), doc.index(END) + len(END)
    for path, text in ((RUN, json.dumps(r, indent=1) + "\n"), (DOC, doc[:i] + block + doc[j:])):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main():
    global REPEATS, CASE1_STEPS, MATMUL_SECONDS, SCALING_STEPS, WINDOW, REST
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--case", action="append", choices=sorted(CASES),
                   help="run only this case (repeatable; default: all of them, in order)")
    p.add_argument("--docs", action="store_true",
                   help="quote the run in docs/speed.md (and keep its JSON in docs/assets/bench.json); a full run only")
    p.add_argument("--from-json", metavar="FILE", help="the table of an earlier --json run (nothing is run)")
    args = p.parse_args()
    if args.docs and (args.quick or args.case):
        p.error("--docs quotes a full run: leave out --quick and --case")
    if args.from_json:
        r = json.loads(Path(args.from_json).read_text())
    else:
        if args.quick:
            REPEATS, CASE1_STEPS, MATMUL_SECONDS, SCALING_STEPS, WINDOW, REST = 3, 1000, 0.1, 60, 0.15, 0.1
        r = {"environment": environment(), "repeats": REPEATS}
        for name in sorted(set(args.case or CASES)):
            r[f"case{name}"] = CASES[name]()
    print(json.dumps(r, indent=2) if args.json else table(r))
    if args.docs:
        write_docs(r)


if __name__ == "__main__":
    main()
