"""A run as one self-contained HTML page (`backprop-check run SPEC --html FILE`, `example --html FILE`).

    recorder = html.recorder_for(desc)                 # lockstep's keep(it, m, r)
    result = lockstep(desc, record=recorder)
    html.write("run.html", result, desc, recorder)

recorder.py   what the page keeps of the tensors (every iteration of a short run; a window before
              the stop and regular checkpoints of a long one), encoded as it goes
page.py       the page: the run's data as JSON inside template.html (script and style inline, no
              network), a static summary for a browser without JavaScript, at most page.LIMIT bytes
example.py    the worked example's page: the seed's chain rule for w5 and w1, figure by figure
"""
from ..errors import SpecError
from ..lockstep.verdict import skipped_stages
from ..testing import tolerance
from .page import LIMIT, write as write_page  # noqa: F401 (LIMIT: the API)
from .recorder import Recorder


def recorder_for(desc, skip_stages=()):
    """The Recorder for a lockstep run of the parsed description `desc`."""
    rtol, atol = tolerance(desc["run"]["dtype"])
    return Recorder(desc["run"]["steps"], rtol, atol, skipped_stages(skip_stages))


def write(path, result, desc, recorder, spec_path=None, example=None):
    """Write the page atomically; SpecError naming --html if the file cannot be written (any file
    already there is left as it was)."""
    try:
        write_page(path, result, desc, recorder, spec_path, example)
    except OSError as e:
        raise SpecError("--html", f"cannot write {str(path)!r}: {e.strerror or e} (any file already there"
                                  " is left as it was)") from None
