"""The torch side: the twin model, the lockstep cross-check, the reports and the command.

`from torch_ref import check, assert_lockstep` gives the cross-check from Python (torch_ref/api.py);
they are imported on first use, so that `import torch_ref` (and the command's --help) stays light.

`__version__` is the fallback of `backprop-check --version` where the installed metadata cannot be
read (the source tree on sys.path, not installed); tests/test_conventions.py holds it equal to
pyproject.toml's version.
"""

__version__ = "0.1.0"
__all__ = ["check", "assert_lockstep", "Conventions", "NOT_EXPOSED", "from_batch_method", "from_layers",
           "from_loss_function"]


def version():
    """The installed distribution's version (importlib.metadata), else `__version__`."""
    from importlib import metadata
    try:
        return metadata.version("backprop-check")
    except metadata.PackageNotFoundError:
        return __version__


def __getattr__(name):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
