"""The house holds: every table has one owner, the floors import only downward, no module
imports itself back in a circle, and lzfs/ keeps its modules in folders. docs/architecture.md
draws the same house; when a test here fails, move the code, not the test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "lzfs"

# table -> the one module that may name it in SQL (besides fsck and the schema upgrades)
OWNERS = {
    "inodes": "lzfs/store/namespace.py",
    "dentries": "lzfs/store/namespace.py",
    "extents": "lzfs/store/blockmap.py",
    "frames": "lzfs/store/frames.py",
    "hooks": "lzfs/store/index.py",
    "packs": "lzfs/store/store.py",
    "meta": "lzfs/store/db.py",
    "pack_objects": "lzfs/cluster/objects.py",
    "snapshots": "lzfs/cluster/exchange.py",
    "seen_manifests": "lzfs/cluster/exchange.py",
}
EXEMPT = {"lzfs/report/fsck.py", "lzfs/store/db.py", "lzfs/cluster/bucket.py"}  # checks,
# schema and its upgrades (db.py creates the store tables, bucket.py a node's)
# floors, top first: a module may import from its own floor and those below it
FLOORS = ["cli", "mount", "fuse", "core", "report", "cluster", "objectstore", "store", "criu",
          ""]
SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE(?: IF NOT EXISTS)?)\s+(\w+)", re.I)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent)
        if rel.parts[1] == "testing":
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant but docstrings, f-strings' literal parts included."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def _imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    deps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lzfs"):
            for a in node.names:
                name = f"{node.module}.{a.name}"
                deps.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("lzfs"))
    return {d for d in deps if d in modules}


def _floor(module: str) -> int:
    parts = module.split(".")
    folder = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else ""
    return FLOORS.index(folder)


def test_every_table_is_named_in_sql_only_by_its_owner():
    wrong = []
    for p in PKG.rglob("*.py"):
        rel = str(p.relative_to(PKG.parent))
        if rel in EXEMPT or rel.startswith("lzfs/testing/"):
            continue
        # joined: SQL is often split over several string literals
        text = " ".join(_strings(ast.parse(p.read_text())))
        for table in {m.group(1) for m in SQL.finditer(text)} & OWNERS.keys():
            if OWNERS[table] != rel:
                wrong.append(f"{rel} names table {table} (owner: {OWNERS[table]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_floors_import_only_downward_and_nothing_imports_in_a_circle():
    modules = _modules()
    graph = {m: _imports(ast.parse(p.read_text()), modules) - {m} for m, p in modules.items()}
    up = [f"{a} imports {b}" for a, deps in graph.items() for b in deps
          if a != "lzfs.__main__" and _floor(b) < _floor(a)]
    assert not up, "\n".join(sorted(up))
    # no cycles: a depth-first search finds no edge back into the current path
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*path[path.index(d):], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_lzfs_keeps_at_most_six_modules_beside_its_packages():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 6, top


def test_docs_architecture_names_every_module_in_its_floor_and_no_other():
    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    rooms = doc.split("## Rooms", 1)[1].split("\n## ", 1)[0]
    named: dict[str, set[str]] = {}
    floor = None
    for line in rooms.splitlines():
        head = re.fullmatch(r"\*\*(\w+/|ground)\*\*", line.strip())
        if head:
            floor = "" if head.group(1) == "ground" else head.group(1).rstrip("/")
            named[floor] = set()
        elif floor is not None:
            named[floor].update(re.findall(r"`(\w+\.py)`", line))
    actual: dict[str, set[str]] = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG).parts
        if parts[0] == "testing" or p.name == "__init__.py":
            continue
        actual.setdefault(parts[0] if len(parts) > 1 else "", set()).add(p.name)
    assert named == actual
