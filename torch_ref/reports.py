"""Reports a CI can keep: JSON, Markdown and a PNG plot of a lockstep run.

    backprop-check run SPEC --report run.json --markdown run.md --plot run.png

From Python:

    result = lockstep(desc, record=True)          # record: the per-iteration history reports need
    reports.write_json(path, result, desc)
    reports.write_markdown(path, result, desc)
    reports.write_plot(path, result, desc)

Every file is written atomically: to a temporary file in the same directory, then renamed over the
target (os.replace), so an interrupted run never leaves a half-written report and a file already
there is replaced only by a complete one. `check_writable` refuses a path that cannot be written
before any run starts, and `prepare` refuses --plot without matplotlib (the `plot` extra).

The same description, run again, gives the same JSON report byte for byte: it records only what
determines the run (no process-random seed, no clock). A report holds no timing; should one ever be
added, it belongs under a single top-level "timing" key, the one part that may differ between runs.
"""
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .lockstep.checker import per_stage  # noqa: F401 (reports.per_stage: the API)
from .lockstep.verdict import STAGES, checked_line
from .errors import SpecError
from .testing import shadow_tolerance, tolerance

SCHEMA = "backprop-check/report/1"


# --- writing files --------------------------------------------------------------------------------

def check_writable(path, flag):
    """Raise SpecError(flag, ...) unless a file can be created at `path` (the directory exists and
    takes a new file; the path is not a directory). Creates and removes a probe file; touches
    nothing already there."""
    p = Path(path)
    where = f"cannot write {str(p)!r}"
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise SpecError(flag, f"{where}: it is a directory")
    if not parent.exists():
        raise SpecError(flag, f"{where}: directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise SpecError(flag, f"{where}: {str(parent)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".probe")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SpecError(flag, f"{where}: {e.strerror or e}") from None


def write_atomic(path, write):
    """Call write(file object, binary) on a temporary file beside `path`, then rename it to `path`."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def prepare(report=None, markdown=None, plot=None, html=None):
    """{flag: path} of the reports asked for, each checked writable now (SpecError otherwise):
    call before the run; pass the result to `write_all` after it (--html: torch_ref/html/'s write)."""
    outputs = {flag: path for flag, path in (("--report", report), ("--markdown", markdown),
                                             ("--plot", plot), ("--html", html)) if path is not None}
    if plot is not None:
        require_matplotlib()
    if len({os.path.abspath(p) for p in outputs.values()}) < len(outputs):
        raise SpecError(list(outputs)[-1], f"{', '.join(outputs)} must name different files")
    for flag, path in outputs.items():
        check_writable(path, flag)
    return outputs


PLOT_EXTRA = "pip install 'backprop-check[plot]'"


def require_matplotlib():
    """SpecError naming --plot and the extra to install unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SpecError("--plot", f"needs matplotlib, which is not installed: {PLOT_EXTRA}") from None


def write_all(outputs, result, desc, spec_path=None):
    """Write every report `prepare` accepted, each atomically. A write that fails (disk full, the
    directory gone) raises SpecError naming the flag; the file already at that path is untouched."""
    writers = {"--report": write_json, "--markdown": write_markdown, "--plot": write_plot}
    for flag, path in outputs.items():
        if flag not in writers:
            continue  # --html: the caller's (torch_ref/html/ writes it with the tensors it recorded)
        try:
            writers[flag](path, result, desc, spec_path=spec_path)
        except OSError as e:
            raise SpecError(flag, f"cannot write {str(path)!r}: {e.strerror or e} (any file already there"
                                  " is left as it was)") from None


# --- the content ----------------------------------------------------------------------------------

def environment(desc):
    """The numerical environment of the run: versions, device, dtype, TF32, determinism, seeds.
    Only the description's seeds: torch's process seed (torch.initial_seed(), random per process)
    plays no part in a run, whose every random draw comes from them."""
    import torch
    device = desc["run"]["device"]
    if device == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name()
    else:
        device_name = platform.processor() or platform.machine() or "cpu"
    seeds = {"init": desc["init"].get("seed"), "data": desc["data"].get("random", {}).get("seed")}
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
        "device_name": device_name,
        "dtype": desc["run"]["dtype"],
        "tf32": {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                 "float32_matmul_precision": torch.get_float32_matmul_precision()},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "seeds": seeds,
    }


def _list(a, digits=None):
    """JSON-ready floats (None for NaN: not compared), differences rounded to 4 significant digits."""
    if digits is None:
        return [float(v) if np.isfinite(v) else None for v in a.tolist()]
    return [float(f"{v:.{digits}g}") if np.isfinite(v) else None for v in a.tolist()]


def build(result, desc, spec_path=None):
    """The JSON report as a dict. `result` must come from lockstep(..., record=True)."""
    if result.history is None:
        raise ValueError("the report needs the per-iteration history: run lockstep(..., record=True)")
    h = result.history
    steps = len(h.loss)
    n = min(steps, result.steps_checked + (result.first_mismatch is not None))
    rtol, atol = tolerance(result.dtype)
    tol = {"rtol": rtol, "atol": atol}
    if result.mode == "shadow":  # d_manual <= factor * d_twin + atol + rtol * max |shadow| (lockstep/shadow.py)
        tol = dict(zip(("factor", "rtol", "atol"), shadow_tolerance()))
    stages = {}
    for stage, s in per_stage(h).items():
        stages[stage] = {
            "tensors": s["tensors"],
            "max_abs_err": _list(s["max_abs_err"][:n], 4),
            "max_rel_err": _list(s["max_rel_err"][:n], 4),
            "worst_tensor": [w if w >= 0 else None for w in s["worst"][:n].tolist()],  # index into tensors
            **{k: _list(s[k][:n], 4) for k in ("twin_abs_err", "allowance") if k in s},  # shadow mode's
        }
    first = result.first_mismatch
    return finite({
        "schema": SCHEMA,
        "verdict": "PASS" if result.ok else "FAIL",
        "ok": result.ok,
        "spec": None if spec_path is None else str(spec_path),
        "description": desc,
        "implementation": result.impl,
        "mode": result.mode,
        "steps_requested": steps,
        "steps_checked": result.steps_checked,
        "tolerance": tol,
        "first_mismatch": first.to_json() if first else None,
        "first_mismatch_text": str(first) if first else None,
        "not_reported": result.not_reported,
        "not_reached": result.not_reached,
        "skipped": result.skipped,
        **({"checked": result.checked} if result.checked is not None else {}),  # a trace's (verify)
        "fd": result.fd.to_json() if result.fd else None,
        "summary": result.stats,
        "final_loss": result.final_loss,
        "environment": environment(desc),
        "per_iteration": {
            "iterations": n,
            "loss": {"manual": _list(h.loss[:n, 0]), "reference": _list(h.loss[:n, 1])},
            "stages": stages,
        },
    })


def finite(tree):
    """The report with NaN and infinities as None (null): strict JSON, readable by any parser."""
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(v) for v in tree]
    if isinstance(tree, float) and not np.isfinite(tree):
        return None
    return tree


def write_json(path, result, desc, spec_path=None):
    text = json.dumps(build(result, desc, spec_path), allow_nan=False)
    write_atomic(path, lambda f: f.write(text.encode()))


def markdown(result, desc, spec_path=None):
    """A human summary fit for a pull-request comment."""
    rep = build(result, desc, spec_path)
    env, net, opt = rep["environment"], desc["network"], desc["optimizer"]
    mark = "✅ PASS" if result.ok else "❌ FAIL"
    what = f"`{spec_path}`" if spec_path else "a network description"
    if result.first_mismatch:
        done = (f"{result.steps_checked} of {rep['steps_requested']} iteration(s) of {what} matched, then a "
                f"mismatch at iteration {result.first_mismatch.iteration}")
    else:
        done = f"{result.steps_checked} of {rep['steps_requested']} iteration(s) of {what} matched"
    if result.checked is not None:  # a trace (verify): what it held was compared, on the twin's whole run
        done = f"A trace of {what} replayed over {result.steps_checked} iteration(s) ({checked_line(result.checked)})"
    lines = [
        f"### backprop-check: {mark}",
        "",
        f"{done}, in lockstep against torch autograd: implementation `{result.impl}`, {result.dtype} on "
        f"{result.device}, mode {result.mode}, tolerance rtol {rep['tolerance']['rtol']:g}, "
        f"atol {rep['tolerance']['atol']:g}" + (f" (+ {rep['tolerance']['factor']:g} × the float32 twin's distance;"
        " both sides measured from a float64 shadow)" if result.mode == "shadow" else "")
        + (f"; data-parallel: DDP on {result.parallel.ranks} rank(s), {result.parallel.backend}" if result.parallel else "")
        + ".",
        "",
        f"Network: {network_line(net)}, loss {net['loss']}; optimizer"
        f" {', '.join(f'{k} {v}' for k, v in opt.items())}.",
        "",
        "| stage | max abs diff | max rel diff | worst tensor |",
        "|---|---:|---:|---|",
    ]
    for stage in STAGES:
        if stage in result.stats:
            s = result.stats[stage]
            lines.append(f"| {stage} | {s['max_abs_err']:.3e} | {s['max_rel_err']:.3e} | `{s['worst_tensor']}` |")
        elif stage in result.not_reported:
            lines.append(f"| {stage} | not reported | | (not checked) |")
        elif stage in result.not_reached:
            lines.append(f"| {stage} | not reached | | (the run stopped before it) |")
        elif stage in result.skipped:
            lines.append(f"| {stage} | skipped | | (--skip-stage: not checked) |")
    fl = result.final_loss
    lines += ["", f"Final loss: implementation {fl['manual']!r}, reference {fl['reference']!r}."]
    if result.first_mismatch:
        m = result.first_mismatch
        lines += ["", f"**First mismatch: iteration {m.iteration}, stage `{m.stage}`, tensor `{m.name}`**",
                  "", "```", str(m), "```"]
    if result.fd:
        head = "Finite differences agree" if result.fd.ok else "**Finite differences DISAGREE**"
        lines += ["", f"{head} (third opinion on the gradients):", "", "```", result.fd.summary(), "```"]
    lines += [
        "", "<details><summary>Numerical environment</summary>", "",
        "| | |", "|---|---|",
        f"| Python | {env['python']} |", f"| numpy | {env['numpy']} |", f"| torch | {env['torch']} |",
        f"| device | {env['device']} ({env['device_name']}) |", f"| dtype | {env['dtype']} |",
        f"| TF32 | matmul {env['tf32']['cuda.matmul.allow_tf32']}, cudnn {env['tf32']['cudnn.allow_tf32']} |",
        f"| deterministic algorithms | {env['deterministic_algorithms']} |",
        f"| seeds | init {env['seeds']['init']}, data {env['seeds']['data']} |",
        "", "</details>", "",
    ]
    return "\n".join(lines)


def network_line(net):
    """The network in a few words: the MLP form's sizes, activations and bias, or a layer list's
    input shape and module types (a Residual's body in brackets)."""
    if "layers" not in net:
        return f"sizes {net['sizes']}, activation {', '.join(net['activation'])}, bias {net['bias']}"

    def types(layers):
        return ", ".join(f"Residual[{types(m['layers'])}]" if m["type"] == "Residual" else m["type"] for m in layers)
    return f"input {list(net['input_shape'])}, layers {types(net['layers'])}"


def write_markdown(path, result, desc, spec_path=None):
    text = markdown(result, desc, spec_path)
    write_atomic(path, lambda f: f.write(text.encode()))


def write_plot(path, result, desc, spec_path=None):
    """Top: the loss of both sides per iteration. Below, one panel per stage: its largest error over
    the allowance per iteration (log scale; the pass rule is a line at 1), the first mismatch marked,
    "not reached" where the run stopped before the stage (a failure at iteration 0 included)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result.history
    if h is None:
        raise ValueError("the plot needs the per-iteration history: run lockstep(..., record=True)")
    n = min(len(h.loss), result.steps_checked + (result.first_mismatch is not None))
    its, stages, first = np.arange(n), per_stage(h), result.first_mismatch
    fig, axes = plt.subplots(1 + len(stages), 1, figsize=(7, 1.6 + 1.25 * len(stages)), sharex=True,
                             gridspec_kw={"height_ratios": [1.6] + [1] * len(stages)}, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    ax.plot(its, h.loss[:n, 1], "o-" if n == 1 else "-", color="tab:blue", lw=2.5, alpha=0.5, label="reference (torch)")
    ax.plot(its, h.loss[:n, 0], "x--" if n == 1 else "--", color="tab:red", lw=1, label=f"implementation ({result.impl})")
    losses = h.loss[:n][np.isfinite(h.loss[:n])]
    if losses.size and losses.min() > 0 and losses.max() > 10 * losses.min():
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    verdict = "PASS" if result.ok else f"FAIL at iteration {first.iteration}, {first.stage} {first.name}"
    ax.set_title(f"{Path(str(spec_path)).name if spec_path else 'lockstep'}: {verdict} "
                 f"({result.dtype}, {result.mode})", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    tiny, huge = 1e-18, 1e18  # exact agreement drawn at the floor, an infinite error at the ceiling
    for ax, (stage, s) in zip(axes[1:], stages.items()):
        over = np.clip(s["over"][:n], tiny, huge)  # NaN (not compared) stays NaN: not drawn
        ax.set_yscale("log")
        ax.set_ylim(tiny / 10, huge * 10)
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.text(0.995, 1.0, " allowance", transform=ax.get_yaxis_transform(), fontsize=6, ha="right", va="bottom")
        ax.set_ylabel(stage, fontsize=8)
        ax.tick_params(labelsize=7)
        if stage in result.not_reached or not np.isfinite(over).any():
            ax.text(0.5, 0.5, "not reached", transform=ax.transAxes, ha="center", va="center", color="gray")
        else:
            ax.plot(its, over, ".", ms=1.5 if n > 1 else 6, color="tab:green")
        if first and first.stage == stage and first.iteration < n:
            ax.plot([first.iteration], [over[first.iteration]], "rx", ms=8, mew=2, label=f"first mismatch: {first.name}")
            ax.legend(fontsize=7, loc="upper left")
        if first:
            ax.axvline(first.iteration, color="r", lw=0.6, alpha=0.5)
    axes[-1].set_xlabel("iteration")
    axes[-1].set_xlim(-0.5, max(n - 0.5, 0.5))
    fig.text(0.01, 0.005, f"largest error over the allowance (atol + rtol |reference|) per iteration, log scale;"
             f" a pass is at or below 1; exact agreement drawn at {tiny:g}", fontsize=6)
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=80))
    finally:
        plt.close(fig)


# --- progress on a terminal -----------------------------------------------------------------------

class Progress:
    """`progress(it, steps)` for lockstep: one self-rewriting line on stderr, at most 5 times a
    second; `done()` clears it. Use only when stderr is a terminal (see `for_terminal`)."""

    def __init__(self, stream=None, every=0.2):
        self.stream, self.every, self.last, self.shown = stream or sys.stderr, every, 0.0, False

    def __call__(self, it, steps):
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(f"\rlockstep: iteration {it + 1}/{steps} ({100 * (it + 1) // steps}%)")
            self.stream.flush()
            self.shown = True

    def done(self):
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def for_terminal(quiet, stream=None):
    """A Progress when `stream` (stderr by default) is a terminal and not quiet, else None."""
    stream = stream or sys.stderr
    if quiet or not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return Progress(stream)
