"""Rules of the source layout that keep the package installable and its dependencies one-way:
nothing edits sys.path (the installed package is what gets imported, by tools and tests alike),
only the command-line entry points import detector.cli, modeling imports no higher layer, and
no new import circle appears between the modules of detector/.

The import rules read every import statement, absolute or relative ("from ..weights import
zoo" is detector.weights.zoo), at module level or inside a function: a function-level import
only defers a dependency, it does not remove it. Imports under `if TYPE_CHECKING:` are left
out: they never run, and they are the usual way to name a type without depending on its module.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYS_PATH_EDIT = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*(\+=|=)")


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_sys_path_edits():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in python_files("detector", "tools", "tests")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if SYS_PATH_EDIT.search(line)]
    assert offenders == [], f"sys.path edited in {offenders}; import the installed package, and put shared " \
                            f"test helpers on pytest.ini's pythonpath"


def test_only_entry_points_import_the_cli_package():
    offenders = sorted(f"{p.relative_to(REPO)} imports {name}" for p in python_files("detector")
                       if "cli" not in p.relative_to(REPO / "detector").parts[:1]
                       for name in imported_modules(p) if name == "detector.cli" or name.startswith("detector.cli."))
    assert offenders == [], offenders
    # Each tool that has a console command is a thin wrapper of its detector.cli module.
    for tool in ("train_net", "evaluate", "predict", "export", "convert_weights", "check_dataset", "analyze", "train_cls"):
        assert f"from detector.cli.{tool} import" in (REPO / "tools" / f"{tool}.py").read_text(), tool


@dataclass(frozen=True)
class ImportStatement:
    module: str             # absolute, relative imports resolved: "from . import x" in detector/a/b.py -> detector.a
    names: tuple[str, ...]  # the names of "from module import names"; () for "import module"
    line: int


def module_name(path: Path) -> str:
    """detector/weights/zoo.py -> detector.weights.zoo; detector/weights/__init__.py -> detector.weights."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under `if TYPE_CHECKING:` (or typing.TYPE_CHECKING): never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (getattr(node.test, "id", None) == "TYPE_CHECKING"
                                         or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def import_statements(path: Path) -> list[ImportStatement]:
    """Every import statement of `path` that can run, at the top or inside a function, with
    relative imports made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    # The package a relative import starts from: the module's own package (an __init__.py is its package).
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [ImportStatement(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append(ImportStatement(module, tuple(alias.name for alias in node.names), node.lineno))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every module `path` may import ("from detector import weights" counts as detector.weights,
    and "from detector.engine import run" as detector.engine and detector.engine.run)."""
    names = set()
    for statement in import_statements(path):
        names.add(statement.module)
        names.update(f"{statement.module}.{name}" for name in statement.names)
    return names


def test_modeling_depends_on_no_weights_engine_data_or_tasks():
    """One-way dependencies: weights, engine, data and tasks build on modeling, never the
    reverse, so a model is defined without any of them (docs: issue 14, layout)."""
    forbidden = ("detector.weights", "detector.engine", "detector.data", "detector.tasks")
    offenders = sorted(
        f"{p.relative_to(REPO)} imports {name}" for p in python_files("detector/modeling")
        for name in imported_modules(p) if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert offenders == [], offenders


# Import circles that exist today, each to be broken (docs/ARCHITECTURE.md: plain operations in
# leaf modules, weights/ as a stack of layers). Remove a line when its circle is gone -- the test
# below fails until it is removed, so this list only ever shrinks.
KNOWN_CIRCLES: list[set[str]] = []


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int], dict[str, Path]]:
    """Module -> the modules of detector/ it imports, each edge's first line, and each module's file.

    "from package import name" goes to package.name when that is a module, else to the package
    (its __init__.py, which defines the name). The packages above an imported module are not
    edges of their own: Python runs their __init__.py too, but those are thin facades here
    (re-exports, lazy imports inside functions), and counting them would join every module to
    `detector` and hide the real circles in one."""
    files = {module_name(p): p for p in python_files("detector")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    lines: dict[tuple[str, str], int] = {}
    for name, path in files.items():
        for statement in import_statements(path):
            targets = [f"{statement.module}.{n}" if f"{statement.module}.{n}" in files else statement.module
                       for n in statement.names] or [statement.module]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
                    lines.setdefault((name, target), statement.line)
    return graph, lines, files


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest import cycle through the group's first module (breadth first), for the message."""
    start = min(group)
    previous = {start: None}
    queue = [start]
    while queue:
        module = queue.pop(0)
        for target in sorted(graph[module] & group):
            if target == start:
                path = [module]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, module, start]
            if target not in previous:
                previous[target] = module
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def describe(graph, lines, files, group: set[str]) -> str:
    cycle = one_cycle(graph, group)
    steps = " -> ".join(f"{files[a].relative_to(REPO)}:{lines[a, b]}" for a, b in zip(cycle, cycle[1:]))
    return f"{sorted(group)}: {steps} -> {files[cycle[-1]].relative_to(REPO)}"


def test_no_new_import_circles():
    graph, lines, files = import_graph()
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300   # the graph really was read
    circles = [group for group in strongly_connected(graph) if len(group) > 1]
    new = [describe(graph, lines, files, group) for group in circles if group not in KNOWN_CIRCLES]
    assert not new, ("New import circle(s) between modules of detector/ (each step: the file and line of the "
                     "import). Move the shared code into a leaf module that both import, or import in one "
                     "direction only:\n  " + "\n  ".join(new))
    gone = [sorted(known) for known in KNOWN_CIRCLES if known not in circles]
    assert not gone, f"These import circles no longer exist: remove them from KNOWN_CIRCLES in {__file__}: {gone}"
