"""The `backprop-check` command.

    backprop-check example [--json]                 the seed's worked example, checked
    backprop-check zoo [--json]                     classic backprop mistakes, each caught
    backprop-check run SPEC [--json] [--steps N] [--dtype D] [--device D] [--mode free|resync|shadow]
                            [--impl TARGET] [--fd] [--fd-steps K]
                            [--report FILE.json] [--markdown FILE.md] [--plot FILE.png] [--quiet]
    backprop-check run SPEC --ranks R [--accumulate K] [--ddp-as-written] [--timeout SECONDS]
                                                    data-parallel: DDP on R processes (torch_ref/distributed.py)
    backprop-check zoo --ddp [--json]               the data-parallel mistakes, each caught and diagnosed

Exit codes: 0 everything matched, 1 a mismatch (or an exception raised by the implementation, or,
with --fd, finite differences that disagree), 2 bad input (one line on stderr naming the field:
a bad description, an --impl that cannot be loaded or whose train_step breaks the contract, a
report path that cannot be written: refused before the run starts).
"""
import argparse
import json
import sys

from .spec import DEVICES, DTYPES, SpecError

PROG = "backprop-check"
FD_STEPS = 3  # iterations checked by --fd unless --fd-steps says otherwise


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser():
    p = _Parser(prog=PROG, description="Cross-check hand-written backprop against torch autograd.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = sub.add_parser("example", help="the seed's worked example, figure by figure")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    zoo = sub.add_parser("zoo", help="run the zoo of classic backprop mistakes; show where each is caught")
    zoo.add_argument("--json", action="store_true", help="print one JSON object")
    run = sub.add_parser("run", help="lockstep cross-check of a description file")
    run.add_argument("spec", metavar="SPEC", help="network description (.toml or .json)")
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
                          "path/to/file.py:factory (the factory gets the parsed description)")
    run.add_argument("--fd", action="store_true",
                     help="add central finite differences (numpy, float64) as a third opinion on the "
                          "gradients of the first iterations; costs 2 forward passes per parameter")
    run.add_argument("--fd-steps", type=int, metavar="K",
                     help=f"how many iterations get finite differences (implies --fd; default {FD_STEPS})")
    run.add_argument("--report", metavar="FILE.json",
                     help="write a JSON report: per iteration and stage the largest differences, the "
                          "description, verdict, first mismatch and numerical environment")
    run.add_argument("--markdown", metavar="FILE.md", help="write a Markdown summary (for a pull-request comment)")
    run.add_argument("--plot", metavar="FILE.png",
                     help="write a PNG: the loss of both sides, and per stage the largest relative difference per iteration")
    run.add_argument("--quiet", action="store_true", help="no progress line on the terminal")
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
    return p


def _apply_overrides(desc, args):
    from . import spec
    raw_run = {**desc["run"]}
    for key in ("steps", "dtype", "device"):
        value = getattr(args, key)
        if value is not None:
            raw_run[key] = value
    desc["run"] = spec._run(raw_run)
    return spec.check_fits(desc)  # the dtype's range and the memory, for the overridden run


def cmd_example(args):
    from . import example
    rep = example.report()
    if args.json:
        print(json.dumps({k: v for k, v in rep.items() if k != "rows"}, indent=2))
    else:
        print(example.table(rep))
    return 0 if rep["confirmed_by_autograd"] else 1


def cmd_zoo(args):
    if args.ddp:
        from . import zoo_ddp
        outcomes = zoo_ddp.run_zoo()
        ok = all(o.as_expected for o in outcomes)
        print(json.dumps({"ok": ok, "entries": [o.to_json() for o in outcomes]}, indent=2) if args.json
              else zoo_ddp.table(outcomes))
        return 0 if ok else 1
    from . import zoo
    outcomes = zoo.run_zoo()
    ok = all(o.as_expected for o in outcomes)
    if args.json:
        print(json.dumps({"ok": ok, "entries": [o.to_json() for o in outcomes],
                          "stages_covered": sorted({o.where[1] for o in outcomes if o.where})}, indent=2))
    else:
        print(zoo.table(outcomes))
    return 0 if ok else 1


def cmd_run(args):
    from . import spec
    from .lockstep import lockstep
    desc = _apply_overrides(spec.load(args.spec), args)
    outputs = _check_outputs(args)  # an unwritable report path is refused before the run starts
    for flag, given in (("--impl", args.impl is not None), ("--fd", args.fd or args.fd_steps is not None)):
        if given and (args.ranks is not None or args.only is not None):
            raise SpecError(flag, "checks the lockstep run (not with --ranks or --only)")
    if args.ranks is not None or args.accumulate is not None or args.ddp_as_written or args.timeout is not None:
        return _cmd_run_ranks(desc, args)
    if args.only is not None:
        from .solo import train_alone
        solo = train_alone(desc, args.only)
        print(json.dumps(solo.to_json(), indent=2) if args.json else solo.summary())
        return 0
    fd_steps = _fd_steps(args)
    impl = None
    if args.impl is not None:
        from . import plugin
        impl = plugin.build(args.impl, desc)
    from . import reports
    progress = reports.for_terminal(args.quiet)
    try:
        result = lockstep(desc, impl=impl, mode=args.mode, fd_steps=fd_steps, impl_name=args.impl,
                          record=bool(outputs), progress=progress)
    finally:
        if progress is not None:
            progress.done()
    reports.write_all(outputs, result, desc, spec_path=args.spec)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
    return 0 if result.ok and (result.fd is None or result.fd.ok) else 1


def _check_outputs(args):
    """{flag: path} of the reports asked for, each checked writable now (SpecError otherwise)."""
    from . import reports
    for flag, path in (("--report", args.report), ("--markdown", args.markdown), ("--plot", args.plot)):
        if path is not None and (args.ranks is not None or args.only is not None):
            raise SpecError(flag, "reports are written for the lockstep check (not with --ranks or --only)")
    return reports.prepare(args.report, args.markdown, args.plot)


def _cmd_run_ranks(desc, args):
    """`run SPEC --ranks R`: the data-parallel lockstep (torch_ref/distributed.py)."""
    from . import distributed
    if args.ranks is None:
        raise SpecError("--ranks", "--accumulate, --ddp-as-written and --timeout need --ranks R")
    for flag, given in (("--mode", args.mode != "free"), ("--impl", args.impl is not None),
                        ("--only", args.only is not None), ("--fd", args.fd or args.fd_steps is not None)):
        if given:
            raise SpecError(flag, "not available with --ranks (the data-parallel check runs manual vs DDP, free mode)")
    k = 1 if args.accumulate is None else args.accumulate
    case = distributed.Case(desc, k, distributed.Setup(as_written=args.ddp_as_written))
    timeout = distributed.DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    try:
        (result,) = distributed.check([case], args.ranks, timeout=timeout)
    except distributed.RankFailure as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
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
    try:
        return {"example": cmd_example, "run": cmd_run, "zoo": cmd_zoo}[args.command](args)
    except SpecError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
