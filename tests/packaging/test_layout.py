"""Rules of the source layout that keep the package installable: nothing edits sys.path (the
installed package is what gets imported, by tools and tests alike), and only the command-line
entry points import detector.cli."""
from __future__ import annotations

import re
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
    imports_cli = re.compile(r"^\s*(from detector\.cli\b|import detector\.cli\b|from detector import cli\b)", re.M)
    offenders = [str(p.relative_to(REPO)) for p in python_files("detector")
                 if "cli" not in p.relative_to(REPO / "detector").parts[:1] and imports_cli.search(p.read_text())]
    assert offenders == []
    # Each tool that has a console command is a thin wrapper of its detector.cli module.
    for tool in ("train_net", "evaluate", "predict", "export", "convert_weights", "check_dataset", "analyze", "train_cls"):
        assert f"from detector.cli.{tool} import" in (REPO / "tools" / f"{tool}.py").read_text(), tool


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function ("from detector import
    weights" counts as detector.weights)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "detector":
                names.update(f"detector.{alias.name}" for alias in node.names)
    return names


def test_modeling_depends_on_no_weights_engine_data_or_tasks():
    """One-way dependencies: weights, engine, data and tasks build on modeling, never the
    reverse, so a model is defined without any of them (docs: issue 14, layout)."""
    forbidden = ("detector.weights", "detector.engine", "detector.data", "detector.tasks")
    offenders = sorted(
        f"{p.relative_to(REPO)} imports {name}" for p in python_files("detector/modeling")
        for name in imported_modules(p) if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert offenders == [], offenders
