"""The shape of the code: imports go downward through the rooms, without circles.

The import graph is drawn from the source with ``ast`` (nothing is imported), over every project
package except ``tests`` and ``benchmarks``. Each check has a twin that feeds it a small made-up
graph with the fault it looks for, so a check that could never fail would show.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rooms from the top down; a room may import only from rooms below it, or from a room of its own
# layer without a circle between modules.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("pipelines",),
    ("exports", "tts"),
    ("run",),
    ("transforms",),
    ("report",),
    ("acquisition", "asr", "speakers", "dedup"),
    ("audio",),
    ("corpus",),
    ("storage",),
    ("schemas",),
)
ROOMS = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}

# Modules that import a module of the project inside a function, and why (an optional dependency).
LOCAL_IMPORT_ALLOWED: Dict[str, str] = {
    "pipelines.options": "stage settings are checked against modules loaded only when the option is used",
}

MAX_LINES = 450
# Modules over MAX_LINES, and why they stay whole.
LONG_ALLOWED: Dict[str, str] = {}


def _modules() -> Dict[str, str]:
    """Module name → file path for every project module."""
    out = {}
    for room in ROOMS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, room)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            for f in filenames:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def _resolve(name: str, modules: Dict[str, str]) -> str:
    """The project module ``name`` refers to (a name imported from a package may be a module or an attribute)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imports(path: str, modules: Dict[str, str]) -> List[Tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every import in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{a.name}" for a in child.names] or [child.module]
            for name in names:
                target = _resolve(name, modules)
                if target:
                    found.append((target, in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


def import_graph() -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, int]]]:
    """(module → modules it imports at module level, [(module, imported, line) of function-local imports])."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    local = []
    for mod, path in modules.items():
        for target, in_function, line in _imports(path, modules):
            if target == mod:
                continue
            if in_function:
                local.append((mod, target, line))
            graph[mod].add(target)
    return graph, local


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def upward(graph: Dict[str, Set[str]]) -> List[str]:
    """Imports from a room of a higher layer than the importer's."""
    room = lambda m: m.split(".")[0]
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if ROOMS[room(b)] < ROOMS[room(a)])


def room_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Circles between rooms of one layer (room A imports room B and B imports A)."""
    rooms: Dict[str, Set[str]] = {r: set() for r in ROOMS}
    for a, targets in graph.items():
        rooms[a.split(".")[0]].update(b.split(".")[0] for b in targets if b.split(".")[0] != a.split(".")[0])
    return cycles(rooms)


def test_no_import_circles_between_modules():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_imports_go_downward_through_the_rooms():
    graph, _ = import_graph()
    assert upward(graph) == []
    assert room_cycles(graph) == []


def test_no_function_local_imports_of_the_project():
    _, local = import_graph()
    assert [f"{m}:{line} imports {t}" for m, t, line in local if m not in LOCAL_IMPORT_ALLOWED] == []


def test_every_room_is_placed_in_a_layer():
    found = {d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d, "__init__.py"))}
    assert found - {"tests", "benchmarks"} == set(ROOMS)


def test_no_module_is_too_long():
    long = {}
    for mod, path in _modules().items():
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES and mod not in LONG_ALLOWED:
            long[mod] = n
    assert long == {}


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    """A made-up graph with a circle and an import from a higher room is caught by both checks."""
    graph = {"audio.a": {"audio.b"}, "audio.b": {"audio.a"}, "schemas.x": {"run.y"}, "run.y": set()}
    assert cycles(graph) == [["audio.a", "audio.b"]]
    assert upward(graph) == ["schemas.x -> run.y"]
    assert room_cycles({"acquisition.a": {"asr.b"}, "asr.b": {"acquisition.a"}}) == [["acquisition", "asr"]]


def test_imports_are_read_from_the_source(tmp_path):
    """Module-level and function-local imports of project modules are told apart; others are ignored."""
    path = tmp_path / "m.py"
    path.write_text("import os\nfrom schemas import outcomes\nfrom schemas.records import Source\n"
                    "def f():\n    from storage import fs\n    import numpy\n")
    modules = {"schemas": "", "schemas.outcomes": "", "schemas.records": "", "storage": "", "storage.fs": ""}
    assert _imports(str(path), modules) == [("schemas.outcomes", False, 2), ("schemas.records", False, 3),
                                            ("storage.fs", True, 5)]


def test_every_room_is_packaged():
    """Workers that import the project from its installed package (Dask, Dataflow, a console script
    run from another folder) find only the rooms ``setup.py`` lists."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup = f.read()
    assert [room for room in ROOMS if f'"{room}*"' not in setup] == []
