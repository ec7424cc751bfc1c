"""The `backprop-check` command.

    backprop-check example [--json]                 the seed's worked example, checked
    backprop-check run SPEC [--json] [--steps N] [--dtype D] [--device D] [--mode M]

Exit codes: 0 everything matched, 1 a mismatch, 2 bad input (one line on stderr naming the field).
"""
import argparse
import json
import sys

from .spec import DEVICES, DTYPES, SpecError

PROG = "backprop-check"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser():
    p = _Parser(prog=PROG, description="Cross-check hand-written backprop against torch autograd.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = sub.add_parser("example", help="the seed's worked example, figure by figure")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    run = sub.add_parser("run", help="lockstep cross-check of a description file")
    run.add_argument("spec", metavar="SPEC", help="network description (.toml or .json)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--steps", type=int, help="override run.steps")
    run.add_argument("--dtype", help=f"override run.dtype {list(DTYPES)}")
    run.add_argument("--device", help=f"override run.device {list(DEVICES)}")
    run.add_argument("--only", metavar="SIDE",
                     help="train one side alone, without comparison: manual or twin (prints final loss, time per step)")
    run.add_argument("--mode", default="free",
                     help="free (both sides train on their own, default) or resync (each step judged alone)")
    return p


def _apply_overrides(desc, args):
    from . import spec
    raw_run = {**desc["run"]}
    for key in ("steps", "dtype", "device"):
        value = getattr(args, key)
        if value is not None:
            raw_run[key] = value
    desc["run"] = spec._run(raw_run)
    return desc


def cmd_example(args):
    from . import example
    rep = example.report()
    if args.json:
        print(json.dumps({k: v for k, v in rep.items() if k != "rows"}, indent=2))
    else:
        print(example.table(rep))
    return 0 if rep["confirmed_by_autograd"] else 1


def cmd_run(args):
    from . import spec
    from .lockstep import lockstep
    desc = _apply_overrides(spec.load(args.spec), args)
    if args.only is not None:
        from .solo import train_alone
        solo = train_alone(desc, args.only)
        print(json.dumps(solo.to_json(), indent=2) if args.json else solo.summary())
        return 0
    result = lockstep(desc, mode=args.mode)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
    return 0 if result.ok else 1


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return {"example": cmd_example, "run": cmd_run}[args.command](args)
    except SpecError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
