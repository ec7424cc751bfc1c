"""The page itself: one self-contained HTML file (template.html, its script and style inline, the
run's data as JSON in a <script type="application/json">), with a static summary for a browser
without JavaScript.

The page holds, for every iteration the run compared, both losses (float32) and per stage the
largest error over the allowance (an eighth of a decade); the exact figures of the JSON report
(reports.build) and both sides' tensors at the iterations the recorder kept; the first mismatch in
the words of the text report. The file stays under LIMIT bytes: should the tensors the recorder
kept not fit, iterations are dropped (checkpoints first, the first mismatch's last) and the page
says so.
"""
import html
import json
from importlib import resources

import numpy as np

from .. import reports
from ..lockstep.verdict import STAGES
from .recorder import b64, quantize

LIMIT = 5_000_000  # bytes: the largest page written, whatever the run's length


def template():
    return resources.files(__package__).joinpath("template.html").read_text(encoding="utf-8")


def series(result):
    """Every compared iteration's losses and per stage largest error over the allowance, encoded."""
    h = result.history
    n = min(len(h.loss), result.steps_checked + (result.first_mismatch is not None))
    over = {}
    for stage in STAGES:
        cols = [k for k, (s, _) in enumerate(h.keys) if s == stage]
        if cols:
            block = h.over[:n, cols]
            seen = ~np.all(np.isnan(block), axis=1)
            worst = np.full(n, np.nan)
            worst[seen] = np.nanmax(block[seen], axis=1)
            over[stage] = b64(quantize(worst), np.uint8)
    return n, {"loss_manual": b64(h.loss[:n, 0], np.float32), "loss_reference": b64(h.loss[:n, 1], np.float32),
               "over": over}


def exact(report, iterations):
    """The JSON report's per-iteration figures at `iterations` (loss, per stage max abs/rel, worst tensor;
    shadow mode: then the twin's distance and the allowance)."""
    per = report["per_iteration"]
    out = {}
    for it in iterations:
        if it >= per["iterations"]:
            continue
        out[str(it)] = {"loss": [per["loss"]["manual"][it], per["loss"]["reference"][it]],
                        "stages": {s: [v["max_abs_err"][it], v["max_rel_err"][it],
                                       None if v["worst_tensor"][it] is None else v["tensors"][v["worst_tensor"][it]],
                                       *[v[k][it] for k in ("twin_abs_err", "allowance") if k in v]]  # shadow mode's
                                   for s, v in per["stages"].items()}}
    return out


def network(desc):
    """The MLP form's layer sizes (the page draws its neurons and edges), None for a layer list."""
    net = desc["network"]
    return None if "layers" in net else {"sizes": list(net["sizes"])}


def data(result, desc, recorder, spec_path=None, example=None):
    """Everything the page's script reads."""
    report = reports.build(result, desc, spec_path)
    frames = recorder.frames
    n, enc = series(result)
    first = result.first_mismatch
    every = sorted(frames)
    return {
        "title": f"{spec_path or 'lockstep'}", "verdict": report["verdict"], "ok": result.ok,
        "impl": result.impl, "mode": result.mode, "dtype": result.dtype, "device": result.device,
        "tolerance": report["tolerance"], "steps_requested": report["steps_requested"],
        "steps_checked": result.steps_checked, "iterations": n, "floor": -16,
        "stages": [s for s in STAGES if s in enc["over"]], "not_reached": result.not_reached,
        "not_reported": result.not_reported, "skipped": result.skipped,
        "first_mismatch": first.to_json() if first else None, "first_mismatch_text": str(first) if first else None,
        "summary": result.summary(), "series": enc, "exact": exact(report, every or range(n)),
        "frames": {str(it): frames[it] for it in every}, "kept": recorder.policy(),
        "network": network(desc), "example": example, "dropped": [],
        "parallel": result.parallel.to_json() if result.parallel else None,
    }


def static(d):
    """The page without JavaScript: the verdict, the text report, the example's table."""
    parts = [f"<h2>{html.escape(d['verdict'])}: {html.escape(d['title'])}</h2>",
             f"<pre>{html.escape(d['summary'])}</pre>"]
    if d["example"]:
        rows = "".join(f"<tr><td>{html.escape(r['figure'])}</td><td>{r['manual']!r}</td><td>{r['autograd']!r}</td>"
                       f"<td>{html.escape(str(r['seed']))}</td><td>{'erratum' if r['erratum'] else ''}</td></tr>"
                       for r in d["example"]["rows"])
        parts.append("<table><tr><th>figure</th><th>computed</th><th>autograd</th><th>the post</th><th></th></tr>"
                     f"{rows}</table>")
    return "\n".join(parts)


def render(d):
    """The HTML text of the page for the data `d`."""
    payload = json.dumps(reports.finite(d), allow_nan=False).replace("</", "<\\/")
    return (template().replace("/*DATA*/", payload).replace("<!--STATIC-->", static(d))
            .replace("<!--TITLE-->", html.escape(f"backprop-check: {d['verdict']} {d['title']}")))


def fitted(d):
    """The page's text, iterations of tensors dropped until it is under LIMIT bytes (checkpoints
    first, the last iteration, where a run stopped, last)."""
    text = render(d)
    while len(text.encode()) > LIMIT and d["frames"]:
        its = sorted(d["frames"], key=int)
        gone = its[0] if len(its) > 1 else its[-1]
        del d["frames"][gone]
        d["dropped"].append(int(gone))
        text = render(d)
    return text


def write(path, result, desc, recorder, spec_path=None, example=None):
    """The page of a run lockstep(..., record=recorder) made, written atomically."""
    text = fitted(data(result, desc, recorder, spec_path, example))
    reports.write_atomic(path, lambda f: f.write(text.encode()))
