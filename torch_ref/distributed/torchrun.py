"""One rank under torchrun (multi-machine checks): `python -m torch_ref.distributed SPEC` runs main()."""
import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

from ..errors import SpecError
from .cases import Case, Setup, validate
from .rank import device_for, run_case
from .supervisor import DEFAULT_TIMEOUT


def _arguments(parser):
    """The data-parallel options, shared by `backprop-check run` and `python -m torch_ref.distributed`."""
    parser.add_argument("--accumulate", type=int, default=1, metavar="K",
                        help="split every batch into K micro-batches, no_sync() on all but the last")
    parser.add_argument("--ddp-as-written", action="store_true",
                        help="run the usual step as written (loss as is, / K) and diagnose what differs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long a collective waits for a peer (default {DEFAULT_TIMEOUT:g})")


def main(argv=None):
    """One rank under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from the
    environment); rank 0 prints the report and exits 0 (pass), 1 (mismatch) or 2 (bad input)."""
    from ..description import spec
    from ..cli.usage import OneLineParser
    p = OneLineParser(prog="python -m torch_ref.distributed", description=main.__doc__)
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true")
    p.add_argument("--steps", type=int)
    p.add_argument("--dtype")
    p.add_argument("--device")
    _arguments(p)
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    try:
        if "WORLD_SIZE" not in os.environ:
            raise SpecError("WORLD_SIZE", "not set: start this module with torchrun"
                                          " (or use backprop-check run SPEC --ranks R)")
        world, local = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
        desc = spec.override(spec.load(args.spec), args.steps, args.dtype, args.device)
        case = Case(desc, args.accumulate, Setup(as_written=args.ddp_as_written))
        reduction = validate(case, world)
        torch.set_num_threads(1)
        device, backend = device_for(desc, local, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    except SpecError as e:
        print(f"backprop-check: error: {e}", file=sys.stderr)
        return 2
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    try:
        result = run_case(case, rank, world, device, reduction=reduction)
        # every rank done before any tears down: rank 0 hosts the store, and a rank still in its
        # last exchange when another leaves is aborted (seen under torchrun on two nodes)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return 0
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
    return 0 if result.ok else 1

