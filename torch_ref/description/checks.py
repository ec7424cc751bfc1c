"""The small checkers every section of a description uses, each raising SpecError with the
field's name: a table, a required key, a choice among names, integers that fit int64, finite
numbers, vectors and matrices of them, and the nesting limit. No torch, no numpy."""
import math
import sys

from ..errors import SpecError, field_key, show

# Limits on what a description may ask for, each refused with the field that asks (SpecError):
MAX_DEPTH = 32             # nesting of tables and lists (a valid description needs 4)
MAX_INT = 2 ** 63 - 1      # counts, sizes and seeds: what numpy's and torch's int64 hold


def check_depth(raw):
    """Refuse tables and lists nested deeper than MAX_DEPTH (a valid description needs 4), before
    anything recurses through them; walked without recursion."""
    stack = [(raw, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{field_key(p)}" for p in path[:3]).lstrip(".")
            raise SpecError(field, f"nested more than {MAX_DEPTH} levels deep (a description needs 4)")
        if isinstance(value, dict):
            stack.extend((v, path + (k,)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(value))


def table(t, field):
    if not isinstance(t, dict):
        raise SpecError(field, f"expected a table, got {type(t).__name__}")
    return t


def get(t, section, key):
    if key not in t:
        raise SpecError(f"{section}.{key}", "missing")
    return t[key]


def choice(value, choices, field):
    if value not in choices:
        raise SpecError(field, f"unknown value {show(value)}; expected one of {list(choices)}")
    return value


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def integer(v, field, minimum):
    """An integer >= minimum (0 or 1) that fits int64, as numpy and torch hold counts and seeds."""
    if not (is_int(v) and v >= minimum):
        raise SpecError(field, f"expected a {'positive' if minimum else 'non-negative'} integer, got {show(v)}")
    if v > MAX_INT:
        raise SpecError(field, f"{show(v, 40)} does not fit a 64-bit integer (at most 2**63 - 1)")
    return v


def number(v, field, what="a number"):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(field, f"expected {what}, got {show(v)}")
    try:
        value = float(v)
    except OverflowError:  # an integer of more than 309 digits
        raise SpecError(field, f"{show(v, 40)} is beyond the float range (|x| <= {sys.float_info.max:.4g})") from None
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite, got {show(v)}")
    return value


def vector(v, n, field):
    if not isinstance(v, list) or len(v) != n:
        raise SpecError(field, f"expected a list of {n} numbers, got {show(v)}")
    for i, e in enumerate(v):
        number(e, f"{field}[{i}]")


def matrix(m, shape, field):
    rows, cols = shape
    if not isinstance(m, list) or len(m) != rows or not all(isinstance(r, list) for r in m):
        got = f"{len(m)} rows" if isinstance(m, list) else repr(m)
        raise SpecError(field, f"expected shape ({rows}, {cols}) as a list of {rows} rows, got {got}")
    for i, r in enumerate(m):
        if len(r) != cols:
            raise SpecError(f"{field}[{i}]", f"expected {cols} numbers (shape ({rows}, {cols})), got {len(r)}")
        for j, e in enumerate(r):
            number(e, f"{field}[{i}][{j}]")
