"""`python -m torch_ref ...`: the `backprop-check` command (torch_ref/cli/main.py), with its exit codes."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
