"""The package's import graph: no cycle, and no library module imports a CLI module.

Every ``import`` of a ``stride_jax`` module counts, also those inside functions (a lazy
import hides a cycle, it does not remove it); imports under ``if TYPE_CHECKING:`` do not
run and are skipped.  CLI modules are those with an ``if __name__ == "__main__":`` block.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stride_jax"
EXPECTED_CLIS = {"stride_jax.align", "stride_jax.estimate", "stride_jax.evaluate",
                 "stride_jax.pretrain", "stride_jax.data.fetch", "stride_jax.data.prepare"}


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, modules: set[str], is_package: bool) -> set[str]:
    """Package modules ``tree`` imports (any depth, minus ``if TYPE_CHECKING:`` blocks)."""
    found: set[str] = set()
    package = name if is_package else name.rsplit(".", 1)[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def import_graph(root: Path) -> tuple[dict[str, set[str]], set[str]]:
    """``({module: package modules it imports}, CLI modules)`` of the package at ``root``;
    the package roots (``__init__``) are left out as import targets."""
    paths = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(paths)
    packages = {_module_name(root, p) for p in root.rglob("__init__.py")}
    graph, clis = {}, set()
    for name, path in paths.items():
        source = path.read_text()
        tree = ast.parse(source)
        graph[name] = _imports(tree, name, modules, path.name == "__init__.py") - packages
        if any(isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)
               and "__main__" in ast.unparse(n.test) for n in tree.body):
            clis.add(name)
    return graph, clis


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def library_imports_of_clis(graph: dict[str, set[str]], clis: set[str]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() if m not in clis
                  for t in targets & clis)


def test_package_has_no_cycle_and_libraries_do_not_import_clis():
    graph, clis = import_graph(PACKAGE)
    assert clis == EXPECTED_CLIS
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert library_imports_of_clis(graph, clis) == []
    assert "stride_jax.video" in graph["stride_jax.pipeline"]  # the walk sees real edges
    assert "stride_jax.aligner" in graph["stride_jax.io"]  # ... also inside functions


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_checker_finds_a_lazy_cycle_and_a_library_importing_a_cli(tmp_path):
    pkg = _write(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.sub import c\n",  # lazy import: still an edge
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\nimport sys\n",  # relative import back to a
        "cli.py": "from absl import app\nif __name__ == '__main__':\n    app.run(main)\n",
        "lib.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                  "import pkg.cli\n",
    })
    graph, clis = import_graph(pkg)
    assert clis == {"pkg.cli"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    assert library_imports_of_clis(graph, clis) == ["pkg.lib imports pkg.cli"]
    assert "pkg.a" not in graph["pkg.lib"]  # TYPE_CHECKING imports do not run


def test_public_face_and_the_file_layer_stays_free_of_jax():
    import stride_jax
    from stride_jax import AlignResult, Prior, Video, align_videos, load_prior

    assert {"AlignResult", "Prior", "Video", "align_videos", "load_prior"} <= set(
        stride_jax.__all__)
    assert callable(align_videos) and callable(load_prior)
    assert Video.__module__ == AlignResult.__module__ == "stride_jax.aligner"
    assert Prior.__module__ == "stride_jax.checkpoint"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stride_jax.nope  # noqa: B018
    code = "import sys, stride_jax.io, stride_jax.files; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
