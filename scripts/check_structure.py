#!/usr/bin/env python3
"""Check the package's shape: no file over 400 lines, no import cycle, no import from a layer above.

Run from anywhere: ``python scripts/check_structure.py [PACKAGE_DIR]``. Uses only the standard
``ast`` module, so it runs before anything is installed. Exit 0 when clean, 1 with one line per
finding otherwise.

Layers, highest first (a module may import its own layer and the layers under it)::

    cli > serve > train > pipeline > metrics/export > modelfile/codec > data > models/diffusion > base

``base`` is config, errors, runtime, atomic, version and the package root. Every import counts, also one
inside a function: a deferred import is still a dependency, and hiding a cycle in a function
body keeps the cycle. Cycles are found between modules (files).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

MAX_LINES = 400

# top-level name under the package -> layer rank (higher may import lower)
LAYERS: Dict[str, int] = {
    "cli": 9,
    "__main__": 9,
    "serve": 8,
    "train": 7,
    "pipeline": 6,
    "metrics": 5,
    "export": 5,
    "modelfile": 4,
    "codec": 4,
    "data": 3,
    "models": 2,
    "diffusion": 2,
    "config": 1,
    "config_numbers": 1,
    "errors": 1,
    "runtime": 1,
    "atomic": 1,
    "version": 1,
    "__init__": 10,  # the package root re-exports the public API; nothing imports it from inside
}
LAYER_NAMES = "cli > serve > train > pipeline > metrics/export > modelfile/codec > data > models/diffusion > config(_numbers)/errors/runtime/atomic/version"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def top_of(module: str, package: str) -> Optional[str]:
    """The layer key of a module of the package: 'train' for 'difforge.train.trainer'."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, module: str, is_package: bool, known: Set[str]) -> Set[str]:
    """The package's modules that ``path`` imports (resolved to modules that exist)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module if is_package else module.rsplit(".", 1)[0]
    found: Set[str] = set()

    def resolve(name: str) -> Optional[str]:
        while name:
            if name in known:
                return name
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                m = resolve(alias.name)
                if m:
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                m = resolve(f"{target}.{alias.name}") if alias.name != "*" else None
                if m is None:
                    m = resolve(target)
                if m:
                    found.add(m)
    found.discard(module)
    return found


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def ancestors(module: str) -> Set[str]:
    """A module's parent packages: importing 'a.b.c' runs 'a' and 'a.b' too, but those are not
    dependencies the module chose, so they are not edges of the cycle graph."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def check(root: Path) -> List[str]:
    package = root.name
    files = sorted(root.rglob("*.py"))
    mods = {module_name(p, root): p for p in files}
    known = set(mods)
    problems: List[str] = []
    graph: Dict[str, Set[str]] = {}
    for mod, path in mods.items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        if n > MAX_LINES:
            problems.append(f"{path}: {n} lines (limit {MAX_LINES}); split it by concept")
        deps = imports_of(path, mod, path.name == "__init__.py", known)
        graph[mod] = {d for d in deps if d not in ancestors(mod) and not mod.startswith(d + ".")}
        top = top_of(mod, package)
        rank = LAYERS.get(top)
        if rank is None:
            problems.append(f"{path}: '{top}' has no layer; add it to LAYERS in scripts/check_structure.py")
            continue
        for d in sorted(deps):
            dtop = top_of(d, package)
            drank = LAYERS.get(dtop)
            if drank is not None and drank > rank and dtop != top:
                problems.append(f"{path}: imports {d} from a layer above ({dtop} > {top}; layers: {LAYER_NAMES})")
    for comp in find_cycles(graph):
        problems.append("import cycle: " + " <-> ".join(comp))
    return problems


def main(argv: List[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "difforge"
    if not (root / "__init__.py").is_file():
        print(f"{root} is not a Python package (no __init__.py)", file=sys.stderr)
        return 2
    problems = check(root.resolve())
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} structure problem(s)")
        return 1
    print(f"structure ok: {len(list(root.rglob('*.py')))} modules, none over {MAX_LINES} lines, no cycle, no upward import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
