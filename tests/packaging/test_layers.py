"""The layer arrows of docs/architecture.md hold for every import statement in the source.

The doc's "Layout and allowed imports" table is the source of truth: this test parses it, walks
every `import` / `from ... import` of `ptychopinn/`, `kernels/` and `interop/` (module level and
function-local, via `ast`, so a lazy import cannot hide an arrow) and fails on

- an import of a project module that the governing row does not allow,
- a non-stdlib import that the row does not list,
- a row entry that no governed module uses (the table must stay true, not merely permissive),
- any core module importing interop / TensorFlow / ONNX / ptychodus (hard-coded here, so
  editing the table cannot allow it).
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
ROOTS = {"ptychopinn": "ptychopinn", "ptychopinn.kernels": "kernels", "ptychopinn.interop": "interop"}
STDLIB = set(sys.stdlib_module_names)

# The core must never import these, whatever the doc says.
FORBIDDEN_IN_CORE = ("ptychopinn.interop", "tensorflow", "keras", "onnx", "onnxruntime", "onnxscript", "ptychodus")


@dataclass(frozen=True)
class Row:
    modules: tuple[str, ...]
    internal: tuple[str, ...]  # names under `ptychopinn.`, or ("*",)
    external: tuple[str, ...]  # top-level distributions' import names, or ("*",)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    lineno: int
    local: bool  # inside a function / class / if-block rather than at module level


def _modules() -> dict[str, tuple[Path, bool]]:
    out: dict[str, tuple[Path, bool]] = {}
    for dotted, folder in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            out[".".join([dotted, *parts])] = (path, is_pkg)
    return out


MODULES = _modules()


def imports_of(name: str) -> list[Import]:
    """Every import statement of module `name`, targets resolved to dotted names.

    `from pkg import sub` counts as an import of `pkg.sub` when `sub` is a module of the project.
    """
    path, is_pkg = MODULES[name]
    return imports_in(name, path.read_text(), is_pkg)


def imports_in(name: str, src: str, is_pkg: bool) -> list[Import]:
    tree = ast.parse(src)
    top = {id(node) for node in tree.body}
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, node.lineno, id(node) not in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append(Import(name, sub if sub in MODULES else target, node.lineno, id(node) not in top))
    return found


def _ticks(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


def parse_doc(text: str | None = None) -> tuple[tuple[str, ...], list[Row]]:
    """(shared modules, rows) from docs/architecture.md's layer table."""
    text = DOC.read_text() if text is None else text
    section = text.split("## Layout and allowed imports", 1)[1].split("\n## ", 1)[0]
    shared_line = re.search(r"Shared by every\s+layer:(.*?)\.\n", section, re.S)
    assert shared_line, "docs/architecture.md: the 'Shared by every layer:' sentence is missing"
    shared = tuple(t for t in _ticks(shared_line.group(1)))
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"docs/architecture.md: layer row needs 4 cells: {line}"
        mods = tuple(t for t in _ticks(cells[0]) if "/" not in t)
        rows.append(Row(mods, _ticks(cells[2]), _ticks(cells[3])))
    assert rows, "docs/architecture.md: no layer table rows"
    return shared, rows


SHARED, ROWS = parse_doc()


def governing(name: str) -> tuple[Row, str] | None:
    """The most specific row (and its module name) for module `name`.

    The root `ptychopinn` row governs only the root package itself.
    """
    best: tuple[Row, str] | None = None
    for row in ROWS:
        for mod in row.modules:
            hit = name == mod or (mod != "ptychopinn" and name.startswith(mod + "."))
            if hit and (best is None or len(mod) > len(best[1])):
                best = (row, mod)
    return best


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _matches(target: str, entry: str) -> bool:
    full = "ptychopinn." + entry
    return target == full or target.startswith(full + ".")


def _is_core(name: str) -> bool:
    return not (name == "ptychopinn.cli" or name.startswith("ptychopinn.cli.") or name.startswith("ptychopinn.interop"))


def _project(target: str) -> bool:
    return target == "ptychopinn" or target.startswith("ptychopinn.")


def _verdict(imp: Import, row: Row) -> str | None:
    where = f"{imp.source} line {imp.lineno}{' (function-local)' if imp.local else ''}"
    target = imp.target
    if _project(target):
        if target in SHARED or _package(target) == _package(imp.source):
            return None
        if "*" in row.internal or any(_matches(target, e) for e in row.internal):
            return None
        return f"{where}: imports {target}, not allowed by its row in docs/architecture.md ({', '.join(row.modules)})"
    top = target.split(".")[0]
    if top in STDLIB or "*" in row.external or top in row.external:
        return None
    return f"{where}: imports third-party {top!r}, not listed in its row in docs/architecture.md ({', '.join(row.modules)})"


def test_every_module_has_a_row():
    missing = [m for m in MODULES if governing(m) is None]
    assert not missing, f"modules without a row in docs/architecture.md's layer table: {missing}"


def test_rows_name_existing_modules():
    unknown = [m for row in ROWS for m in row.modules if m not in MODULES]
    assert not unknown, f"docs/architecture.md layer table names modules that do not exist: {unknown}"
    bad = [e for row in ROWS for e in row.internal if e != "*" and "ptychopinn." + e not in MODULES]
    assert not bad, f"docs/architecture.md layer table allows imports of modules that do not exist: {bad}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layer_table(name):
    row, _ = governing(name)
    problems = [p for imp in imports_of(name) if (p := _verdict(imp, row))]
    assert not problems, "\n".join(problems)


def test_core_never_imports_interop_tf_onnx_ptychodus():
    problems = []
    for name in MODULES:
        if not _is_core(name):
            continue
        for imp in imports_of(name):
            if any(imp.target == f or imp.target.startswith(f + ".") for f in FORBIDDEN_IN_CORE):
                problems.append(f"{name} line {imp.lineno}: imports {imp.target}")
    assert not problems, "the core must not import interop / TensorFlow / ONNX / ptychodus:\n" + "\n".join(problems)


def test_doc_rows_for_the_core_do_not_allow_forbidden_imports():
    bad = []
    for row in ROWS:
        if not any(_is_core(m) for m in row.modules):
            continue
        for e in row.internal:
            if e == "*" or _matches("ptychopinn." + e, "interop") or e == "interop":
                bad.append((row.modules, e))
        bad += [(row.modules, e) for e in row.external if e == "*" or e in FORBIDDEN_IN_CORE]
    assert not bad, f"docs/architecture.md allows the core forbidden imports: {bad}"


def test_every_listed_arrow_is_used():
    """The table is true, not merely permissive: each entry is used by a module of its row."""
    used: dict[tuple[str, str], bool] = {}
    for row in ROWS:
        for mod in row.modules:
            for e in row.internal + row.external:
                if e != "*":
                    used[(mod, e)] = False
    for name in MODULES:
        row, mod = governing(name)
        for imp in imports_of(name):
            for e in row.internal:
                if _project(imp.target) and _matches(imp.target, e):
                    used[(mod, e)] = True
            if imp.target.split(".")[0] in row.external:
                used[(mod, imp.target.split(".")[0])] = True
    # a multi-module row's entry counts as used when any of its modules uses it
    unused = []
    for row in ROWS:
        for e in row.internal + row.external:
            if e != "*" and not any(used.get((m, e)) for m in row.modules):
                unused.append(f"{', '.join(row.modules)} -> {e}")
    assert not unused, "docs/architecture.md lists arrows no module uses (remove them):\n" + "\n".join(unused)


def test_the_walker_sees_function_local_imports():
    """Oracle for the walker itself on a known function-local import."""
    src = "import os\nfrom . import image\n\ndef f():\n    from .. import io\n    import torch\n"
    found = imports_in("ptychopinn.metrics.frc", src, is_pkg=False)
    assert [(i.target, i.local) for i in found] == [
        ("os", False), ("ptychopinn.metrics.image", False), ("ptychopinn.io", True), ("torch", True)]
    row = Row(("ptychopinn.metrics",), (), ("numpy",))
    assert _verdict(Import("ptychopinn.metrics.frc", "torch", 5, True), row) is not None
    assert _verdict(Import("ptychopinn.metrics.frc", "ptychopinn.io", 4, True), row) is not None
    assert _verdict(Import("ptychopinn.metrics.frc", "os", 1, False), row) is None
    assert _verdict(Import("ptychopinn.metrics.frc", "ptychopinn.metrics.image", 1, False), row) is None
    assert _verdict(Import("ptychopinn.metrics.frc", "ptychopinn.errors", 1, False), row) is None


def test_no_private_names_imported_across_packages():
    """`from other_package.mod import _private` couples packages to internals; use public names.

    `ptychopinn._lazy` (the lazy-export helper shared by every package `__init__`) and
    `__version__` are the exceptions.
    """
    problems = []
    for name, (path, _) in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            for imp, alias in zip(imports_in(name, ast.unparse(node), MODULES[name][1]), node.names):
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and _project(imp.target) and _package(imp.target) != _package(name):
                    problems.append(f"{name} line {node.lineno}: from {imp.target} import {alias.name}")
    assert not problems, "private names imported across packages:\n" + "\n".join(problems)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def test_function_local_imports_say_why_in_torch_modules():
    """In a module that imports torch at the top, laziness buys no light import: a function-local
    import needs a one-line reason (`# lazy: ...`: an import cycle, an optional extra, a slow
    optional import). `if TYPE_CHECKING:` imports do not run and are exempt."""
    problems = []
    for name, (path, is_pkg) in MODULES.items():
        src = path.read_text()
        imps = imports_in(name, src, is_pkg)
        if not any(i.target.split(".")[0] == "torch" and not i.local for i in imps):
            continue
        lines = src.split("\n")
        exempt = _type_checking_lines(ast.parse(src))
        for imp in imps:
            if imp.local and imp.lineno not in exempt and "lazy:" not in lines[imp.lineno - 1]:
                problems.append(f"{name} line {imp.lineno}: {lines[imp.lineno - 1].strip()}")
    assert not problems, "function-local imports without a '# lazy: <reason>' comment (or move them to the top):\n" + "\n".join(problems)
