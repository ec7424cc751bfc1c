"""Finding and reading a description file: a path, or the name of a description shipped in
torch_ref/specs (package data, through importlib.resources); a regular file of at most
MAX_FILE_BYTES, in UTF-8, never a FIFO or a device."""
import os
import stat
from pathlib import Path

from ..errors import SpecError, show

MAX_FILE_BYTES = 16 << 20  # the description file is read up to this size (a larger one is refused)


BUNDLED_SUFFIXES = (".toml", ".json")


def bundled():
    """{name: resource} of the descriptions shipped in torch_ref/specs (package data, read through
    importlib.resources so that an installed wheel finds them), the name being the file's stem."""
    from importlib import resources
    found = {}
    for item in resources.files("torch_ref").joinpath("specs").iterdir():
        stem, dot, suffix = item.name.rpartition(".")
        if dot and "." + suffix in BUNDLED_SUFFIXES and item.is_file():
            found.setdefault(stem, item)
    return dict(sorted(found.items()))


def locate(spec):
    """Where the description SPEC is: the file at that path where one exists (a path that exists
    wins, whatever it holds), else the bundled description of that name (with or without its
    suffix); SpecError naming SPEC and listing the bundled names otherwise. Returns a Path, or the
    importlib.resources Traversable of a bundled file (a Path too, unless installed zipped)."""
    path = Path(spec)
    if os.path.lexists(path):
        return path
    text = str(spec)
    found = bundled()
    for name, item in found.items():
        if text in (name, item.name):
            return item
    raise SpecError("SPEC", f"cannot read {show(text)}: no such file, and no bundled description of that name"
                            f" (bundled: {', '.join(found) or 'none'})")


def first_comment(text):
    """The first comment line of a description (its `#` and the spaces after it stripped), or ""."""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            return line.lstrip().lstrip("#").strip()
    return ""


def read_bundled(item):
    """The text of a bundled description that is not a plain file (a zipped install)."""
    return item.read_bytes().decode("utf-8")


def read_file(path):
    """The text of the description: a regular file (not a FIFO, a device or a directory, which
    could block or never end) of at most MAX_FILE_BYTES, in UTF-8."""
    name = show(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without a writer
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SpecError("SPEC", f"{name} is not a regular file")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise SpecError("SPEC", f"cannot read {name}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError("SPEC", f"{name} is larger than {MAX_FILE_BYTES >> 20} MiB: not a description")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("SPEC", f"{name} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}") from None


def bundled_path(name):
    """The path of a description shipped in torch_ref/specs (e.g. "worked_example")."""
    from importlib import resources
    return Path(str(resources.files("torch_ref") / "specs" / f"{name}.toml"))
