"""The lockstep check, from set-up to verdict.

    run.py                 lockstep(): set up the reference, the implementation and the rule for a
                           mode (free, resync, shadow), run the loop, make the Result
    loop.py                the one loop: reference and implementation step, compare, record, stop
                           (the data-parallel check runs through it too)
    checker.py             the fixed-tolerance rule (torch_ref/testing.py's table) and the history
    shadow.py              shadow mode's rule: float32 judged against a float64 shadow twin
    rounding.py            the second opinion: is a difference the size of the run's rounding?
    finite_differences.py  central differences as a third opinion on gradients (--fd)
    verdict.py             the stages, Mismatch and Result: what a run concludes and how it is shown
    solo.py                one side trained alone, without comparison (--only)
"""
