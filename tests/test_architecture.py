"""The layout's rules, checked on the source: no import cycles in bbc1k, no edits of
the import path, no oversized modules, classes at module level, and a torch-free
core. See docs/architecture.md for the map these rules keep readable."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "bbc1k"
MAX_LINES = 400
SIZED_FOLDERS = ("bbc1k", "app", "scripts", "bench", "graphics", "util", "tests")
# grep's pattern (any one character between the words), spelt so that this file does not match it.
PATH_EDIT = re.compile("sys" + "." + "path")
# What the slim serving image and the data tools import: none may pull torch or fastai in.
TORCH_FREE = ("bbc1k", "bbc1k.cli", "bbc1k.layout", "bbc1k.folders", "bbc1k.photo_scores", "bbc1k.synth",
              "bbc1k.serving", "bbc1k.train", "app.server")
# What imports bbc1k: the package never imports them back.
USERS = {"app", "bench", "graphics", "scripts", "tests", "util"}


def _python_files(root: Path) -> Iterator[Path]:
    """The repository's .py files, outside virtual environments and git's own folder."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in {".git", "__pycache__", "node_modules"}
                         and not (Path(folder, d) / "pyvenv.cfg").exists())
        yield from (Path(folder, f) for f in sorted(files) if f.endswith(".py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in _python_files(REPO / PACKAGE)}


def _imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The bbc1k modules that module ``name`` imports anywhere: at the top, inside
    functions, under ``if TYPE_CHECKING``. ``from a import b`` names module ``a.b``
    when that is a module, else ``a``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` binds a module that exists; walk up to the deepest known one.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_import_graph_sees_function_level_and_type_checking_imports() -> None:
    """The checker itself: a cycle made of a lazy import and a TYPE_CHECKING import is found."""
    known = {"bbc1k", "bbc1k.a", "bbc1k.b", "bbc1k.sub", "bbc1k.sub.c"}
    a = ast.parse("def f():\n    from bbc1k.b import thing\n")
    b = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bbc1k import a\n")
    c = ast.parse("from .. import a\nfrom . import other\nimport bbc1k.b.missing\nimport numpy\n")
    graph = {"bbc1k.a": _imported(a, "bbc1k.a", False, known), "bbc1k.b": _imported(b, "bbc1k.b", False, known),
             "bbc1k.sub.c": _imported(c, "bbc1k.sub.c", False, known)}
    assert graph == {"bbc1k.a": {"bbc1k.b"}, "bbc1k.b": {"bbc1k.a"}, "bbc1k.sub.c": {"bbc1k.a", "bbc1k.b", "bbc1k.sub"}}
    assert find_cycle(graph) == ["bbc1k.a", "bbc1k.b", "bbc1k.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_bbc1k_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "bbc1k.layout" in graph and graph["bbc1k.layout"] <= {"bbc1k"}, "the contract imports no other bbc1k module"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_bbc1k_imports_none_of_its_users() -> None:
    """Dependencies point one way: the app, scripts, benchmarks, graphics and
    tests import bbc1k, never the other way round."""
    back = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            back += [f"{name}:{node.lineno} imports {top}" for top in tops if top in USERS]
    assert not back, "\n".join(back)


def test_no_python_file_edits_the_import_path() -> None:
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in _python_files(REPO)
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), start=1)
            if PATH_EDIT.search(line)]
    assert not hits, "every import must be an ordinary package import:\n" + "\n".join(hits)


def _sized_files(folders: tuple[str, ...] = SIZED_FOLDERS) -> Iterator[Path]:
    for folder in folders:
        if (REPO / folder).is_dir():
            yield from _python_files(REPO / folder)


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in _sized_files()}
    assert sizes, "no modules found"
    big = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_classes_are_defined_at_module_level() -> None:
    """A class made inside a function is a new class per call: it cannot be pickled,
    compared or found by name, and it hides the design in a factory."""
    nested = []
    # tests may keep a small fake beside the test that uses it
    for path in _sized_files(tuple(f for f in SIZED_FOLDERS if f != "tests")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested += [f"{path.relative_to(REPO)}:{node.lineno} class {node.name} in {func.name}()"
                           for node in ast.walk(func) if isinstance(node, ast.ClassDef)]
    assert not nested, "classes inside functions:\n" + "\n".join(sorted(set(nested)))


@pytest.mark.parametrize("module", TORCH_FREE)
def test_core_modules_import_without_torch(module: str) -> None:
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "heavy = sorted({'torch', 'fastai'} & set(sys.modules)); print(heavy); sys.exit(bool(heavy))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, f"importing {module} imports {run.stdout.strip()}{run.stderr[-2000:]}"
