"""The layout holds: no import circle between modules of manual/ and torch_ref/, no file over about
400 lines, no private name imported from another module. (manual/ never importing torch is
tests/test_independence.py's, in a fresh interpreter.)"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("manual", "torch_ref")
MAX_LINES = 400


def modules():
    """{dotted module name: path} of every module of the packages."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name, path):
    """[(module imported, names imported from it)] of every import statement, at any depth, resolved
    to absolute names (a relative import against the module's package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.append((target, [a.name for a in node.names]))
    return out


def graph():
    """{module: modules it imports}, a `from package import module` counted as importing the module."""
    mods = modules()
    edges = {}
    for name, path in mods.items():
        deps = set()
        for target, names in imports(name, path):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            deps.update(t for t in (submodules if names and len(submodules) == len(names) else [target, *submodules])
                        if t in mods and t != name)
        edges[name] = deps
    return edges


def circles(edges):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_circle_finder_finds_one():
    """The control: a circle of three modules, and one module importing itself back through a package."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"p.x": {"p.y"}, "p.y": {"p.x"}}) == [["p.x", "p.y"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_file_over_about_400_lines(name):
    lines = modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{modules()[name].relative_to(ROOT)} has {lines} lines"


def test_no_private_name_is_imported_from_another_module():
    private = [(name, target, n) for name, path in modules().items() for target, names in imports(name, path)
               if target.split(".")[0] in PACKAGES for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_docs_development_names_every_module():
    """docs/development.md's Layout names every module (a package's __init__ and __main__ aside)."""
    doc = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    layout = doc[doc.index("## Layout"):doc.index("## Tests")]
    unnamed = [str(path.relative_to(ROOT)) for path in modules().values()
               if path.stem not in ("__init__", "__main__") and path.name not in layout]
    assert unnamed == []
