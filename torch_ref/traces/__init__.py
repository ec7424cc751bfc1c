"""Trace files, for programs that cannot be driven (a job on another machine, a GPU kernel test):
`backprop-check export SPEC DIR` writes what the implementation needs (export.py), the
implementation writes its results per iteration in the layout of layout.py, `backprop-check verify
SPEC DIR` replays the twin against them (replay.py). docs/traces.md."""
