"""The `backprop-check` command.

    backprop-check example [--json] [--html FILE]   the seed's worked example, checked
    backprop-check zoo [--json]                     classic backprop mistakes, each caught
    backprop-check run SPEC [--json] [--steps N] [--dtype D] [--device D] [--mode free|resync|shadow]
                            [--impl TARGET] [--step-timeout SECONDS] [--skip-stage STAGE ...]
                            [--fd] [--fd-steps K]
                            [--report FILE.json] [--markdown FILE.md] [--plot FILE.png] [--html FILE.html]
                            [--quiet] [--no-attribution]
    backprop-check run SPEC --ranks R [--accumulate K] [--ddp-as-written] [--timeout SECONDS]
                            [--report FILE.json] [--markdown FILE.md] [--plot FILE.png] [--html FILE.html]
                                                    data-parallel: DDP on R processes (torch_ref/distributed/)
    backprop-check zoo --ddp [--json]               the data-parallel mistakes, each caught and diagnosed
    backprop-check export SPEC DIR [--steps N] [--dtype D]
                                                    the description, initial state and batches as files, for
                                                    a program that cannot be driven (docs/traces.md)
    backprop-check verify SPEC DIR [--json] [--device D] [--skip-stage STAGE ...] [--report FILE.json]
                            [--markdown FILE.md] [--plot FILE.png] [--html FILE.html] [--quiet] [--no-attribution]
                                                    the results it wrote into DIR, replayed against the twin
    backprop-check specs [--json]                   the bundled descriptions: each name, its first comment line
    backprop-check --version                        prints `backprop-check X.Y.Z`

SPEC is a description file, or where no file of that name exists, the name of a bundled description
(`backprop-check run worked_example`; torch_ref/description/spec.py's locate). `python -m torch_ref ...` is the
same command, with the same exit codes.

With --json, stdout carries exactly one strict JSON document (NaN and infinities as null):
whatever the implementation prints, from Python, C or a subprocess, goes to stderr.

Exit codes:
    0    every check passed;
    1    a mismatch, or the implementation failed (an exception of its own code, SystemExit and
         KeyboardInterrupt raised by it included, or a call longer than --step-timeout), or, with
         --fd, finite differences that disagree;
    2    usage, bad input or the environment (one line on stderr naming the field: a bad
         description or flag, an --impl that cannot be loaded, whose factory raises an Exception
         (refusing the description) or whose train_step breaks the contract, a report path that cannot be written, a missing optional dependency such as
         matplotlib for --plot: refused before the run starts);
    130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.
"""
import contextlib
import json
import os
import sys

from .. import interrupt
from .. import version
from ..description.spec import DEVICES, DTYPES, SpecError
from .usage import OneLineParser
from ..lockstep.finite_differences import FD_STEPS  # iterations checked by --fd unless --fd-steps says otherwise

PROG = "backprop-check"
EXIT_CODES = ("exit codes: 0 every check passed; 1 a mismatch, or the implementation failed; "
              "2 usage, bad input, or the environment; 130/143 interrupted (SIGINT/SIGTERM)")


def _parser():
    p = OneLineParser(prog=PROG, description="Cross-check hand-written backprop against torch autograd.",
                      epilog=EXIT_CODES)
    p.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    ex = sub.add_parser("example", help="the seed's worked example, figure by figure", epilog=EXIT_CODES)
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("--html", metavar="FILE.html",
                    help="write a self-contained HTML page: the seed's chain rule for w5 and w1 figure by figure, and "
                         "a step-through of the worked example's lockstep run")
    zoo = sub.add_parser("zoo", help="run the zoo of classic backprop mistakes; show where each is caught", epilog=EXIT_CODES)
    zoo.add_argument("--json", action="store_true", help="print one JSON object")
    specs = sub.add_parser("specs", epilog=EXIT_CODES,
                           help="list the bundled descriptions: each name (a SPEC for `run`) and its first comment "
                                "line (called specs, not list: it lists SPECs, and the zoo is a list too)")
    specs.add_argument("--json", action="store_true", help="print one JSON object")
    run = sub.add_parser("run", help="lockstep cross-check of a description file", epilog=EXIT_CODES)
    run.add_argument("spec", metavar="SPEC",
                     help="network description (.toml or .json), or the name of a bundled one (see `specs`); "
                          "a file that exists wins over a name")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--steps", type=int, help="override run.steps")
    run.add_argument("--dtype", help=f"override run.dtype {list(DTYPES)}")
    run.add_argument("--device", help=f"override run.device {list(DEVICES)}")
    run.add_argument("--only", metavar="SIDE",
                     help="train one side alone, without comparison: manual or twin (prints final loss, time per step)")
    run.add_argument("--mode", default="free",
                     help="free (both sides train on their own, default), resync (each step judged alone) or "
                          "shadow (float32 free-running, judged against a float64 shadow twin)")
    run.add_argument("--impl", metavar="TARGET",
                     help="check this implementation instead of manual: package.module:factory or "
                          "path/to/file.py:factory (the factory gets the parsed description), or "
                          "\"exec:COMMAND ARGS\": a program in any language, on its stdin and stdout "
                          "(docs/protocol.md)")
    run.add_argument("--step-timeout", type=float, metavar="SECONDS",
                     help="how long one call of the implementation (its factory, load_state_dict, train_step, "
                          "load_optimizer_state, eval) may take before the run fails naming it (default 300; 0: no limit)")
    run.add_argument("--skip-stage", action="append", metavar="STAGE",
                     help="do not compare this stage (output, loss, delta, grad, optim, param; a layer list's "
                          "forward, buffer, eval; repeatable), e.g. "
                          "loss for an implementation that reports a loss other than the one it descends; the "
                          "summary, --json and the reports list what was skipped")
    run.add_argument("--fd", action="store_true",
                     help="add central finite differences (numpy, float64) as a third opinion on the "
                          "gradients of the first iterations (a layer list: with the iteration's dropout masks, "
                          "batch norm in training mode); costs 2 forward passes per parameter")
    run.add_argument("--fd-steps", type=int, metavar="K",
                     help=f"how many iterations get finite differences (implies --fd; default {FD_STEPS})")
    run.add_argument("--report", metavar="FILE.json",
                     help="write a JSON report: per iteration and stage the largest differences, the "
                          "description, verdict, first mismatch and numerical environment")
    run.add_argument("--markdown", metavar="FILE.md", help="write a Markdown summary (for a pull-request comment)")
    run.add_argument("--plot", metavar="FILE.png",
                     help="write a PNG: the loss of both sides, and per stage the largest error over the allowance per iteration")
    run.add_argument("--html", metavar="FILE.html",
                     help="write a self-contained HTML page (no network, opens from file://): step through the "
                          "iterations, both sides' tensors side by side, the first mismatch opened, at most 5 MB "
                          "(every mode, and with --ranks: rank 0's comparisons)")
    run.add_argument("--quiet", action="store_true", help="no progress line on the terminal")
    run.add_argument("--no-attribution", action="store_true",
                     help="on a mismatch, do not replay the zoo's mistakes to name one that reproduces it "
                          "(the one-line diagnosis stays)")
    run.add_argument("--ranks", type=int, metavar="R",
                     help="data-parallel: the twin in DistributedDataParallel on R processes (gloo on CPU, nccl "
                          "with a GPU per rank), each on its shard of every batch, against the manual full batch")
    run.add_argument("--accumulate", type=int, metavar="K",
                     help="with --ranks: K micro-batches per step, no_sync() on all but the last")
    run.add_argument("--ddp-as-written", action="store_true",
                     help="with --ranks: each rank's loss as is (/ K), no scaling; a mismatch is diagnosed")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="with --ranks: how long a collective waits for a peer before the run is stopped "
                          "(default 60)")
    zoo.add_argument("--ddp", action="store_true",
                     help="the data-parallel mistakes instead (DDP on 2 processes), each caught and diagnosed")
    _trace_parsers(sub, run)
    return p


def _trace_parsers(sub, run):
    """export and verify (docs/traces.md); verify's report flags are run's."""
    ex = sub.add_parser("export", epilog=EXIT_CODES,
                        help="write the description, the initial state and every batch (and dropout masks) as .npy "
                             "files with a manifest, for an implementation that cannot be driven (docs/traces.md)")
    ex.add_argument("spec", metavar="SPEC", help="network description (.toml or .json), or a bundled one's name")
    ex.add_argument("dir", metavar="DIR", help="a new or empty directory, or an earlier export (replaced)")
    ex.add_argument("--steps", type=int, help="override run.steps")
    ex.add_argument("--dtype", help=f"override run.dtype {list(DTYPES)}")
    ve = sub.add_parser("verify", epilog=EXIT_CODES,
                        help="replay the twin against the results an implementation wrote into an export "
                             "(DIR/results/NNNNNN.npz, any subset of the iterations): run's verdict and reports")
    ve.add_argument("spec", metavar="SPEC", help="the description DIR was exported from")
    ve.add_argument("dir", metavar="DIR", help="the export, with the implementation's results/")
    for action in run._actions:  # the same flags as run's, with the same help
        if action.dest in ("json", "device", "skip_stage", "report", "markdown", "plot", "html", "quiet",
                           "no_attribution"):
            ve._add_action(action)


def cmd_example(args):
    from .. import api
    return _show(args, api.worked_example, html=args.html)


def cmd_zoo(args):
    from .. import api
    return _show(args, api.zoo, ddp=args.ddp)


def cmd_specs(args):
    from .. import api
    return _show(args, api.specs)


def _show(args, call, *a, **kw):
    """Call the API inside the --json guard; print its summary or its JSON; exit 0 if it is ok, else 1."""
    with _json_stdout(args.json) as emit, _flags():
        found = call(*a, **kw)
        emit(_dumps(found.to_json()) if args.json else found.summary())
    return 0 if found.ok else 1


def cmd_run(args):
    from .. import api, reports
    for flag, given in (("--impl", args.impl is not None), ("--fd", args.fd or args.fd_steps is not None),
                        ("--skip-stage", args.skip_stage is not None),
                        ("--step-timeout", args.step_timeout is not None),
                        ("--no-attribution", args.no_attribution)):
        if given and (args.ranks is not None or args.only is not None):
            raise SpecError(flag, "checks the lockstep run (not with --ranks or --only)")
    for flag, given in (("--report", args.report is not None), ("--markdown", args.markdown is not None),
                        ("--plot", args.plot is not None), ("--html", args.html is not None)):
        if given and args.only is not None:
            raise SpecError(flag, "reports a lockstep run (not with --only)")
    over = {"steps": args.steps, "dtype": args.dtype, "device": args.device}
    if args.ranks is not None or args.accumulate is not None or args.ddp_as_written or args.timeout is not None:
        return _cmd_run_ranks(args, over)
    if args.only is not None:
        return _show(args, api.train_alone, args.spec, args.only, **over)
    fd_steps = _fd_steps(args)
    progress = interrupt.track(reports.for_terminal(args.quiet))  # the iteration, for an interruption
    try:
        with _json_stdout(args.json) as emit, _flags():
            result = api.check(args.spec, args.impl, mode=args.mode, fd_steps=fd_steps, report=args.report,
                               markdown=args.markdown, plot=args.plot, html=args.html, skip_stages=args.skip_stage or (),
                               step_timeout=args.step_timeout, progress=progress,
                               attribution=not args.no_attribution, **over)
            emit(_dumps(result.to_json()) if args.json else result.summary())
    finally:
        if progress is not None:
            progress.done()
    return 0 if result.ok and (result.fd is None or result.fd.ok) else 1


def cmd_export(args):
    from .. import api
    with _flags():
        manifest = api.export(args.spec, args.dir, steps=args.steps, dtype=args.dtype)
    print(f"exported {manifest['steps']} iteration(s) ({manifest['dtype']}) to {args.dir}: the implementation "
          f"writes {os.path.join(args.dir, 'results', 'NNNNNN.npz')} (docs/traces.md), then "
          f"`{PROG} verify {args.spec} {args.dir}`")
    return 0


def cmd_verify(args):
    from .. import api, reports
    progress = interrupt.track(reports.for_terminal(args.quiet))
    try:
        with _json_stdout(args.json) as emit, _flags():
            result = api.verify(args.spec, args.dir, device=args.device, report=args.report, markdown=args.markdown,
                                plot=args.plot, html=args.html, skip_stages=args.skip_stage or (),
                                progress=progress, attribution=not args.no_attribution)
            emit(_dumps(result.to_json()) if args.json else result.summary())
    finally:
        if progress is not None:
            progress.done()
    return 0 if result.ok else 1


# the API's argument names, as the command's flags (a SpecError naming one names the flag)
FLAGS = {"step_timeout": "--step-timeout", "skip_stages": "--skip-stage", "fd_steps": "--fd-steps", "mode": "--mode",
         "ranks": "--ranks", "accumulate": "--accumulate", "timeout": "--timeout", "impl": "--impl",
         "side": "--only", "steps": "--steps", "dtype": "--dtype", "device": "--device"}


@contextlib.contextmanager
def _flags():
    """A SpecError naming an argument of the API names the command's flag instead."""
    try:
        yield
    except SpecError as e:
        if e.field in FLAGS:
            raise SpecError(FLAGS[e.field], e.message) from None
        raise


def _dumps(tree):
    """Strict JSON (NaN and infinities as null): what json.loads(..., parse_constant=raise) accepts."""
    from ..reports import finite
    return json.dumps(finite(tree), indent=2, allow_nan=False)


@contextlib.contextmanager
def _json_stdout(enabled):
    """With --json, stdout carries the JSON document and nothing else. While the block runs,
    Python's sys.stdout is stderr, and so is file descriptor 1 (prints from C code and from
    subprocesses); the text given to the yielded `emit` is printed on the real stdout after it.
    Without --json, `emit` is print."""
    if not enabled:
        yield print
        return
    held = []
    saved = _point_stdout_at_stderr()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield held.append
    finally:
        _restore_stdout(saved)
        for text in held:
            print(text)


def _point_stdout_at_stderr():
    """Make file descriptor 1 a copy of 2; the saved descriptor 1 (None where that cannot be done)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        return saved
    except (OSError, ValueError, AttributeError):
        return None


def _restore_stdout(saved):
    """Flush what C code and Python's own streams still hold for descriptor 1, then restore it."""
    if saved is None:
        return
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)  # C's stdio buffer: printf output goes where fd 1 is now
    except (OSError, AttributeError, TypeError):
        pass
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os.dup2(saved, 1)
    os.close(saved)


def _cmd_run_ranks(args, over):
    """`run SPEC --ranks R`: the data-parallel lockstep (torch_ref/distributed/), through api.check."""
    from .. import api, distributed
    if args.ranks is None:
        raise SpecError("--ranks", "--accumulate, --ddp-as-written and --timeout need --ranks R")
    for flag, given in (("--mode", args.mode != "free"), ("--only", args.only is not None)):
        if given:
            raise SpecError(flag, "not available with --ranks (the data-parallel check runs manual vs DDP, free mode)")
    try:
        with _json_stdout(args.json) as emit, _flags():
            result = api.check(args.spec, ranks=args.ranks, accumulate=args.accumulate,
                               ddp_as_written=args.ddp_as_written, timeout=args.timeout, progress=interrupt.note,
                               report=args.report, markdown=args.markdown, plot=args.plot, html=args.html, **over)
            emit(_dumps(result.to_json()) if args.json else result.summary())
    except distributed.RankFailure as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    return 0 if result.ok else 1


def _fd_steps(args):
    """0 without --fd; --fd-steps K (>= 1) implies --fd."""
    if args.fd_steps is not None:
        if args.fd_steps < 1:
            raise SpecError("--fd-steps", f"expected a positive integer, got {args.fd_steps}")
        return args.fd_steps
    return FD_STEPS if args.fd else 0


def main(argv=None):
    args = _parser().parse_args(argv)
    with interrupt.handled():  # SIGINT, SIGTERM -> Interrupted, wherever the run is
        try:
            return {"example": cmd_example, "run": cmd_run, "zoo": cmd_zoo, "specs": cmd_specs,
                    "export": cmd_export, "verify": cmd_verify}[args.command](args)
        except SpecError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        except interrupt.Interrupted as e:  # the `finally`s on the way stopped ranks, removed temp files
            clear = "\r\033[K" if sys.stderr.isatty() else ""  # a progress line cut short by the signal
            print(f"{clear}{PROG}: {e}", file=sys.stderr)
            return e.exit_code
        except BrokenPipeError:  # stdout closed by its reader (`... | head`): the rest is not wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
            print(f"{PROG}: error: stdout: closed before everything was written", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
