"""The one error type of bad input, and how what a user gave is echoed in it: one line, quoted,
escaped, cut (a newline or an escape code in a key or value cannot break the line)."""
import json
import re


class SpecError(ValueError):
    """A description that cannot be run; `field` is the dotted name of the culprit."""

    def __init__(self, field, message):
        field, message = one_line(str(field)), one_line(str(message))
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def one_line(text):
    """`text` with every unprintable character (newline, escape, ...) written as its escape, so a
    message stays one line and the terminal shows what was given instead of obeying it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def show(value, limit=80):
    """A user-supplied value as an error message shows it: its repr (quoted, escaped: one line),
    cut to `limit` characters (a list of a million numbers is not echoed whole)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deep; an integer of more than 4300 digits
        text = f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def field_key(k):
    """A key as part of a dotted field name: bare when plain, else quoted as TOML writes it
    (network."bad key"), so a newline or an escape sequence in a key cannot break the line."""
    return k if isinstance(k, str) and _PLAIN_KEY.match(k) else json.dumps(str(k))


class ImplError(SpecError):
    """An implementation that cannot be loaded, or whose train_step breaks the contract (exit 2)."""

    def __init__(self, message):
        super().__init__("--impl", message)


def exception_text(e):
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
