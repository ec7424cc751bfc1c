"""Every output shown in the docs is produced here, by running the command it shows.

    python scripts/docs.py            rewrite every output block of README.md and docs/*.md
    python scripts/docs.py --check    exit 1 naming each block whose text is not what its command
                                      prints now (tests/test_docs.py runs this)

An output block is a fenced block between two markers; the first names the command, as a user
types it (the `backprop-check` command, run in-process), and optionally how many of its first
or last lines to keep and the exit code it must end with:

    <!-- output: backprop-check run torch_ref/specs/worked_example.toml --steps 3; head 4; exit 0 -->
    ```
    ...what the command prints...
    ```
    <!-- /output -->

The command's stdout and stderr are shown as a terminal shows them (stderr after stdout).
"""
import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- output: (?P<spec>.*?) -->\n```\n(?P<text>.*?)```\n<!-- /output -->", re.S)


def pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse(spec):
    """(argv, lines kept (n: the first n, -n: the last n, None: all), exit code) of a block's marker."""
    parts = [p.strip() for p in spec.split(";")]
    argv = shlex.split(parts[0])
    head, code = None, 0
    for p in parts[1:]:
        word, _, value = p.partition(" ")
        if word in ("head", "tail"):
            head = int(value) if word == "head" else -int(value)
        elif word == "exit":
            code = int(value)
        else:
            raise ValueError(f"unknown option {p!r} in <!-- output: {spec} -->")
    if argv[0] != "backprop-check":
        raise ValueError(f"an output block runs the backprop-check command, not {argv[0]!r}")
    return argv[1:], head, code


_printed = {}  # argv -> (exit code, output): a command shown in several blocks runs once


def run(spec):
    """What the block's command prints (its first or last lines), checked against its exit code."""
    argv, head, expected = parse(spec)
    key = tuple(argv)
    if key not in _printed:
        _printed[key] = _run(argv)
    code, lines = _printed[key]
    if code != expected:
        raise RuntimeError(f"`{spec}` exited {code}, the docs say {expected}")
    kept = lines if head is None else lines[:head] if head > 0 else lines[head:]
    return "\n".join(kept) + "\n"


def _run(argv):
    import torch

    from torch_ref.cli import main as cli
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)  # the commands name paths from the repository's root
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        os.chdir(cwd)
    return code, (out.getvalue() + err.getvalue()).splitlines()


def blocks(text):
    return [(m, m.group("spec"), m.group("text")) for m in BLOCK.finditer(text)]


def main(argv=None):
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = text
        for m, spec, shown in reversed(blocks(text)):
            now = run(spec)
            if now != shown:
                stale.append(f"{page.relative_to(ROOT)}: <!-- output: {spec} -->")
                new = new[:m.start("text")] + now + new[m.end("text"):]
        if new != text and not check:
            tmp = page.with_suffix(".md.tmp")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, page)
    for s in stale:
        print(("stale: " if check else "rewritten: ") + s)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
