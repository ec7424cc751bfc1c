"""Data-parallel lockstep: the torch twin in DistributedDataParallel on R processes, checked at
every iteration against the manual engine's full-batch step.

    backprop-check run SPEC --ranks R [--accumulate K] [--ddp-as-written] [--timeout S] [--json]
    torchrun --nproc-per-node R -m torch_ref.distributed SPEC [same options, no --ranks]
    torchrun --nnodes M --nproc-per-node R --rdzv-backend c10d --rdzv-endpoint HOST:PORT \
             --rdzv-id ID -m torch_ref.distributed SPEC [...]        (the same line on each machine)

Every batch is split into K micro-batches and every micro-batch into R shards, one per rank
(contiguous rows, sizes differing by at most one, as np.array_split). Rank r trains the twin,
wrapped in torch.nn.parallel.DistributedDataParallel, on its shards: K forward/backward passes,
no_sync() on all but the last, then one optimizer step. Rank 0 also runs the manual engine on the
whole batch and, at every iteration, compares in this order:

    output    the ranks' outputs, put back in batch order          vs manual full-batch output
    loss      the loss reduced across ranks (all_reduce)           vs manual full-batch loss
    delta     each rank's dE/dnet rows / R (DDP's averaging)       vs manual rows
    sync      before the last micro-batch the ranks' gradients must still differ (no_sync in effect)
    grad      every rank's all-reduced gradients                   vs manual full-batch gradients
    optim     the optimizer state (if it keeps one), every rank    vs manual, after the update
    param     every rank's updated parameters                      vs manual updated parameters
    replica   every rank's parameters and buffers bitwise equal to rank 0's (a drifting rank is named)

Loss scaling. DDP averages gradients over the R ranks. The full-batch loss is

    L = Σ_{k,r} w_kr · L_kr      w_kr = 1 for a loss summed over samples (half-sse, reduction="sum")
                                 w_kr = n_kr / N for a loss averaged over samples (mse, "mean")

where L_kr is the loss of rank r's shard of micro-batch k (n_kr of the batch's N samples). So rank
r back-propagates c_kr · L_kr with c_kr = R · w_kr, DDP's average is exactly ∇L, and the report says
which factors were used. With --ddp-as-written a rank back-propagates L_kr / K, as a typical
training loop does, and the loss reported is the mean over ranks; a mismatch then comes with a
one-line diagnosis, found by testing the known data-parallel mistakes against the manual engine.

The check runs through the one lockstep loop (torch_ref/lockstep/loop.py), on rank 0: the reference is
DDPReference (rank.py: it tells every rank to go on, runs this rank's DDP step and gathers every
rank's results with torch.distributed.gather_object), the implementation the manual engine, the
rule DataParallelRule (rule.py: the comparisons above). The other ranks follow: step, send, until
rank 0 says stop. The result is the lockstep's verdict.Result, with a DataParallel record
(`Result.parallel`: ranks, micro-batches, backend, reduction, scaling, replicas bitwise equal).

The package, along its concerns: cases.py (what a case is, the shards, the loss scaling),
rank.py (one rank's step, rank 0's reference, the followers), rule.py (rank 0's comparison),
results.py (DistMismatch: a Mismatch naming the rank and a diagnosis), diagnosis.py (naming the
data-parallel mistake), supervisor.py (starting, watching and stopping the ranks), torchrun.py
(one rank under torchrun: `python -m torch_ref.distributed`).
"""
from .cases import (Case, STAGES, Setup, batch_reduction, batch_sizes, loss_factor, loss_label, scaling_note, shards, split,
                    validate)  # noqa: F401
from .results import DistMismatch  # noqa: F401
from .rule import DataParallelRule  # noqa: F401
from .diagnosis import diagnose  # noqa: F401
from .rank import PEER_LOST, PHASES, WAITING, DDPReference, device_for, run_case, worker  # noqa: F401
from .supervisor import DEFAULT_TIMEOUT, START_METHOD, RankFailure, check, free_port  # noqa: F401
from .torchrun import main  # noqa: F401
