"""The `backprop-check` command: main.py parses the flags and calls torch_ref.api; usage.py is its
argument parser (one line on a usage error, exit 2)."""
