"""The cross-check from Python, for anyone's tests.

    from torch_ref import assert_lockstep
    assert_lockstep("torch_ref/specs/worked_example.toml", "scripts/seed_port.py:build", steps=200)

    result = check("worked_example_batch6", ranks=2)   # data-parallel: DDP on 2 processes

`check` returns the `Result`; `assert_lockstep` returns it too, and on a mismatch (or, with
`fd_steps`, finite differences that disagree) raises AssertionError whose message is the full
report: iteration, stage, tensor, worst index, both values, tolerance. A description that cannot be
run, or an implementation that cannot be loaded or breaks the contract, raises `SpecError` /
`ImplError` (both ValueError) naming the field, as the command's exit code 2.
"""
import copy
from pathlib import Path

from .implementation import plugin
from .implementation import Conventions, NOT_EXPOSED, from_batch_method, from_layers, from_loss_function  # noqa: F401 (the API)
from .description import spec
from .lockstep.verdict import skipped_stages

EXEC = "exec:"  # --impl "exec:COMMAND ARGS": a program in any language (implementation/process.py)


def check(desc, impl=None, *, steps=None, dtype=None, device=None, mode="free", fd_steps=0,
          report=None, markdown=None, plot=None, html=None, skip_stages=(), step_timeout=None, progress=None,
          spec_path=None, ranks=None, accumulate=None, ddp_as_written=False, timeout=None, attribution=True):
    """Run the lockstep of `impl` against the torch twin and return the Result.

    desc: a path to a description file (.toml / .json), the name of a bundled description
          ("worked_example": `backprop-check specs` lists them), or a description as a dict (parsed or not).
    impl: an object with load_state_dict/train_step; a factory (a class, say) called with the parsed
          description; a TARGET string "package.module:factory" or "path/to/file.py:factory"; None for manual;
          "exec:COMMAND ARGS": a program in any language, through the process protocol (docs/protocol.md).
    steps, dtype, device: override the description's [run] values.
    fd_steps: iterations that also get central finite differences (2 forward passes per parameter).
    report, markdown, plot: paths of a JSON report, a Markdown summary, a PNG plot (torch_ref/reports.py),
          checked writable before the run, written atomically after it.
    html: the path of a self-contained HTML page stepping through the run (torch_ref/html/), the
          same way.
    skip_stages: stages not compared (e.g. ["loss"] for an implementation that reports a loss other
          than the one it descends), listed in Result.skipped.
    step_timeout: seconds each call of the implementation may take (default 300; 0: no limit); a
          call out of time ends the run as the implementation's failure.
    progress: progress(it, steps), called before each iteration (the command's progress line).
    spec_path: the description's path, recorded in the reports (`desc` itself when it is a path).
    attribution: on a mismatch, replay the zoo's mistakes that apply on the same description and name
          those that reproduce it exactly (torch_ref/zoo/attribution.py; bounded in cost); False: not.
    ranks: data-parallel (torch_ref/distributed/): the twin in DistributedDataParallel on `ranks`
          processes against the manual full-batch step; the Result's `parallel` record says how it ran.
          With it: accumulate (K micro-batches per step, no_sync() on all but the last; default 1),
          ddp_as_written (each rank's loss as written, / K: a mismatch is diagnosed), timeout (seconds
          a collective waits for a peer; default 60). Not with impl, mode, fd_steps,
          skip_stages or step_timeout (the manual engine against DDP, free-running); the reports
          and the page show rank 0's comparisons (every rank's, gathered). A rank that
          raises, dies or hangs stops the run: distributed.RankFailure (its exit_code: 1, or 2 for
          a set-up that failed before training).
    The `backprop-check run` command is this function behind its flags.
    """
    if spec_path is None and isinstance(desc, (str, Path)):
        spec_path = desc
    desc = _described(desc, steps, dtype, device)
    if ranks is not None or accumulate is not None or ddp_as_written or timeout is not None:
        lockstep_only = {"impl": impl is not None, "mode": mode != "free", "fd_steps": bool(fd_steps),
                         "skip_stages": bool(skip_stages), "step_timeout": step_timeout is not None}
        return _data_parallel(desc, ranks, accumulate, ddp_as_written, timeout, progress, lockstep_only,
                              (report, markdown, plot, html), spec_path)
    from . import reports
    skipped_stages(skip_stages)  # bad arguments are refused before the factory runs
    step_timeout = plugin.step_timeout(step_timeout, "step_timeout")
    outputs = reports.prepare(report, markdown, plot, html)
    name = impl if isinstance(impl, str) else getattr(impl, "__qualname__", None)
    if isinstance(impl, str) and impl.startswith(EXEC):  # a program, through the process protocol
        from .implementation import process
        impl = process.build(impl[len(EXEC):], desc, step_timeout)
    elif isinstance(impl, (str, type)) or (impl is not None and not hasattr(impl, "train_step")):
        impl = plugin.build(impl, desc, step_timeout)  # a TARGET, a class, a factory
    if name is None and impl is not None:
        name = impl.name if isinstance(impl, plugin.Guard) else type(impl).__qualname__
    return _lockstep_and_reports(desc, impl, name, outputs, html, spec_path, mode=mode, fd_steps=fd_steps,
                                 progress=progress, skip_stages=skip_stages, step_timeout=step_timeout,
                                 attribution=attribution)


def _lockstep_and_reports(desc, impl, name, outputs, html, spec_path, annotate=None, **kwargs):
    """The lockstep run of `impl` (kwargs: lockstep's), `annotate(result)` (a trace's record of what
    was checked), then the reports `outputs` (reports.prepare's) and the HTML page."""
    from . import reports
    from .lockstep.run import lockstep  # torch: imported once the arguments are known to be good
    recorder = None
    if html is not None:
        from . import html as page
        recorder = page.recorder_for(desc, kwargs.get("skip_stages", ()))
    try:
        result = lockstep(desc, impl=impl, impl_name=name, record=recorder or bool(outputs), **kwargs)
    finally:
        if callable(getattr(impl, "close", None)) and isinstance(impl, plugin.Guard):  # a program: ended
            impl.close()
    if annotate is not None:
        annotate(result)
    reports.write_all(outputs, result, desc, spec_path=spec_path)
    if recorder is not None:
        page.write(html, result, desc, recorder, spec_path=spec_path)
    return result


def export(desc, folder, *, steps=None, dtype=None, device=None):
    """`backprop-check export SPEC DIR`: the description (a path, a bundled name or a dict), its
    initial state and every batch for run.steps iterations, as files in `folder`, with a manifest
    (torch_ref/traces/, docs/traces.md). Returns the manifest (a dict)."""
    from .traces.export import export as write
    return write(_described(desc, steps, dtype, device), folder)


def verify(desc, folder, *, device=None, report=None, markdown=None, plot=None, html=None, skip_stages=(),
           progress=None, spec_path=None, attribution=True):
    """`backprop-check verify SPEC DIR`: the results an implementation wrote into the export `folder`
    replayed against the twin (free mode, the export's steps and dtype), with `check`'s verdict
    and reports; Result.checked says which iterations and stages the trace held. A trace that is
    not the description's, or a results file with a wrong key, dtype or shape: TraceError (exit 2)."""
    from . import reports
    from .traces.replay import TraceGuard, open_trace
    if spec_path is None and isinstance(desc, (str, Path)):
        spec_path = desc
    skip = skipped_stages(skip_stages)
    outputs = reports.prepare(report, markdown, plot, html)
    desc, trace = open_trace(_described(desc, device=device), folder)
    name = f"trace {folder}"
    return _lockstep_and_reports(desc, TraceGuard(trace, name), name, outputs, html, spec_path,
                                 annotate=lambda r: setattr(r, "checked", trace.checked(r, skip)),
                                 progress=progress, skip_stages=skip_stages, attribution=attribution)


def assert_lockstep(desc, impl=None, **kwargs):
    """`check`, and AssertionError with the full report unless every compared value matched at every
    iteration (and, with fd_steps, the finite differences agree). Returns the Result."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    result = check(desc, impl, **kwargs)
    if not result.ok or (result.fd is not None and not result.fd.ok):
        raise AssertionError(result.summary())
    return result


def train_alone(desc, side, *, steps=None, dtype=None, device=None):
    """One side ("manual" or "twin") trained alone, without comparison: its final loss and time per
    step (`backprop-check run SPEC --only SIDE`). Returns solo.SoloResult."""
    from .lockstep.solo import train_alone as alone
    return alone(_described(desc, steps, dtype, device), side)


def worked_example(html=None):
    """The seed's worked example, every figure recomputed by the manual engine and confirmed by
    autograd, its errata explained with the zoo (`backprop-check example`); with `html`, a page
    of its chain rule and its lockstep run written there (torch_ref/html/example.py)."""
    from . import example
    if html is not None:
        from .html import example as page
        page.prepare(html)
    rep = example.report()
    if html is not None:
        page.write(html, rep)
    return Shown(rep, lambda rep: rep["confirmed_by_autograd"], example.table,
                 lambda rep: {k: v for k, v in rep.items() if k not in ("rows", "lockstep")})


def zoo(ddp=False):
    """Every classic backprop mistake run in lockstep, each where it must be caught (`backprop-check
    zoo`); with ddp, the data-parallel mistakes on 2 processes (`zoo --ddp`)."""
    if ddp:
        from .zoo import ddp as z
        return Shown(z.run_zoo(), _all_expected, z.table,
                     lambda outcomes: {"ok": _all_expected(outcomes), "entries": [o.to_json() for o in outcomes]})
    from .zoo import runner as z
    return Shown(z.run_zoo(), _all_expected, z.table,
                 lambda outcomes: {"ok": _all_expected(outcomes), "entries": [o.to_json() for o in outcomes],
                                   "stages_covered": sorted({o.where[1] for o in outcomes if o.where})})


def specs():
    """The bundled descriptions: (name, first comment line) each (`backprop-check specs`)."""
    from .description import files as specfile
    rows = [(name, specfile.first_comment(item.read_text(encoding="utf-8")))
            for name, item in specfile.bundled().items()]
    width = max((len(name) for name, _ in rows), default=0)
    return Shown(rows, lambda rows: True,
                 lambda rows: "\n".join(f"{name:<{width}}  {summary}".rstrip() for name, summary in rows),
                 lambda rows: {"specs": [{"name": name, "summary": summary} for name, summary in rows]})


class Shown:
    """What an API call found, with the verdict and the two ways the command shows it: `value`,
    `ok`, `summary()` (text) and `to_json()`, as a Result has."""

    def __init__(self, value, ok, summary, to_json):
        self.value, self.ok = value, bool(ok(value))
        self._summary, self._to_json = summary, to_json

    def summary(self):
        return self._summary(self.value)

    def to_json(self):
        return self._to_json(self.value)


def _all_expected(outcomes):
    return all(o.as_expected for o in outcomes)


def _described(desc, steps=None, dtype=None, device=None):
    """A parsed description from a path, a bundled name or a dict, with [run] overridden."""
    desc = spec.load(desc) if isinstance(desc, (str, Path)) else _parsed(desc)
    if (steps, dtype, device) != (None, None, None):
        desc = spec.override(desc, steps, dtype, device)
    return desc


def _data_parallel(desc, ranks, accumulate, ddp_as_written, timeout, progress, lockstep_only, files, spec_path):
    """check(..., ranks=R): the data-parallel lockstep of one case, its Result; `files`: the paths of
    the report, the Markdown, the plot and the page (None: not asked for), from rank 0's history."""
    from . import distributed, reports
    if ranks is not None and "layers" in desc["network"]:
        raise spec.SpecError("ranks", "the data-parallel check covers networks given as sizes (the MLP form); "
                                      "this one is given as layers")
    if ranks is not None and desc.get("penalty"):  # each rank would add it to its shard's loss: not verified
        raise spec.SpecError("ranks", "the data-parallel check does not cover [penalty] (each rank's loss would "
                                      "carry it, and DDP's averaging would scale it): check it without ranks")
    if ranks is not None and desc["network"].get("loss_args", {}).get("reduction") == "batch-mean":
        raise spec.SpecError("ranks", "the data-parallel check does not cover reduction = \"batch-mean\" "
                                      "(a shard's batch is not the step's): check it without ranks")
    if ranks is None:
        raise spec.SpecError("ranks", "accumulate, ddp_as_written and timeout need ranks=R")
    for name, given in lockstep_only.items():
        if given:
            raise spec.SpecError(name, "not available with ranks (the data-parallel check runs manual vs DDP,"
                                       " free-running)")
    outputs = reports.prepare(*files)
    record = bool(outputs)
    if files[3] is not None:
        from . import html as page
        record = page.recorder_for(desc)  # (rank 0 records; it comes back with the Result's history)
    case = distributed.Case(desc, 1 if accumulate is None else accumulate,
                            distributed.Setup(as_written=bool(ddp_as_written)), record=record)
    timeout = distributed.DEFAULT_TIMEOUT if timeout is None else timeout
    (result,) = distributed.check([case], ranks, timeout=timeout, progress=progress)
    reports.write_all(outputs, result, desc, spec_path=spec_path)
    if files[3] is not None:
        page.write(files[3], result, desc, result.history.keep, spec_path=spec_path)
    return result


def _parsed(desc):
    """A description dict, raw (as a TOML file gives it) or already as spec.parse returns it."""
    try:
        return spec.parse(copy.deepcopy(desc))
    except spec.SpecError:
        if isinstance(desc, dict) and set(desc) == set(spec.SECTIONS):  # parse's output has every section
            return copy.deepcopy(desc)
        raise
