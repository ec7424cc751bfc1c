"""Imported by the data-parallel forkserver only (first in torch_ref/distributed/supervisor.py's
forkserver preload list), never by the command itself: importing it IS the action.

The forkserver is started by the command's process and forks every rank. The ranks die with the
forkserver (each sets PR_SET_PDEATHSIG), but the forkserver would not die with the command: it
stays up while any process it forked lives (they hold its "alive" pipe), and they would live on,
training, reparented to init. So the forkserver asks the kernel to SIGKILL it when the command's
process ends (torch_ref.interrupt.die_with_parent), and ends at once if that process is already
gone (BACKPROP_CHECK_PARENT_PID, set by distributed.check, says which process that is).
"""
import os

from ..interrupt import die_with_parent

die_with_parent(int(os.environ["BACKPROP_CHECK_PARENT_PID"]) if "BACKPROP_CHECK_PARENT_PID" in os.environ else None)
