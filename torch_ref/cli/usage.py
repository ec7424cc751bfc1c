"""The command line's argument parser: a usage error is one line on stderr and exit 2, as every
other bad input is (the `backprop-check` command, and `python -m torch_ref.distributed`)."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
