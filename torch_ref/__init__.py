"""The torch side: the twin model, the lockstep cross-check, the reports and the command.

`from torch_ref import check, assert_lockstep` gives the cross-check from Python (torch_ref/api.py);
they are imported on first use, so that `import torch_ref` (and the command's --help) stays light.
"""

__all__ = ["check", "assert_lockstep"]


def __getattr__(name):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
