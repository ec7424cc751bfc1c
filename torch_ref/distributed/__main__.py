"""`python -m torch_ref.distributed SPEC`: one rank under torchrun (torchrun.py)."""
import sys

from .torchrun import main

sys.exit(main())
