"""The run was interrupted by a signal (SIGINT, SIGTERM): not a failure of what was being checked."""


class Interrupted(BaseException):
    """Raised by the command's signal handler; `signum` is the signal received. A BaseException,
    as KeyboardInterrupt is, so that `except Exception` in checked code cannot swallow it, and
    the plug-in guard (torch_ref/plugin.py) re-raises it instead of reporting a plug-in failure."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
