"""detector/weights/ is a stack (its package docstring): each module imports only modules of its
own layer or below, and no format module reads with another's reader.

Every import statement counts, at module level or inside a function (a function-level import
defers a dependency, it does not remove it)."""
import ast
from pathlib import Path

import detector.weights

WEIGHTS = Path(detector.weights.__file__).resolve().parent
TOP = 5
# Layer of each module below the top (loading into models: loading.py, starting weights, the
# training checkpointer, ...), which every other module of the package is on.
LAYERS = {
    "formats": 1,
    "checkpoint_io": 2, "state_dicts": 2, "config_upgrade": 2,
    "conversion": 3,
    "zoo": 4,
}
# The format modules may share these (the error class, atomic writes), and nothing else of one another.
FORMAT_COMMONS = {"detector.weights.formats.errors", "detector.weights.formats.atomic_write"}


def module_of(path: Path) -> str:
    parts = path.relative_to(WEIGHTS.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """detector.weights.conversion.registry -> 3; detector.weights.loading -> TOP."""
    rest = module.split(".")[2:]
    return LAYERS.get(rest[0], TOP) if rest else TOP


def _imported(base: str, name: str) -> str:
    """What "from base import name" imports: the module base.name when there is one, else base."""
    candidate = WEIGHTS.parent.parent / f"{base}.{name}".replace(".", "/")
    return f"{base}.{name}" if candidate.with_suffix(".py").exists() or candidate.is_dir() else base


def weights_imports(path: Path) -> list[tuple[str, int]]:
    """(module of detector.weights, line) for every import of `path`, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_of(path).split(".") if path.name == "__init__.py" else module_of(path).split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            names = [_imported(base, alias.name) for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.startswith("detector.weights.")]
    return found


def modules():
    return sorted(p for p in WEIGHTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layers_are_read_from_the_real_files():
    layers = {layer_of(module_of(p)) for p in modules()}
    assert layers == {1, 2, 3, 4, TOP}, layers
    assert layer_of("detector.weights.conversion.convert") == 3 and layer_of("detector.weights.zoo") == 4


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{p.relative_to(WEIGHTS)}:{line} (layer {layer_of(module_of(p))}) imports {name} (layer {layer_of(name)})"
              for p in modules() for name, line in weights_imports(p)
              if layer_of(name) > layer_of(module_of(p))]
    assert upward == [], "\n".join(upward)


def test_format_modules_share_only_the_error_and_the_atomic_write():
    crossing = [f"{p.relative_to(WEIGHTS)}:{line} imports {name}"
                for p in (WEIGHTS / "formats").glob("*.py")
                for name, line in weights_imports(p)
                if name.startswith("detector.weights.formats.") and name not in FORMAT_COMMONS]
    assert crossing == [], crossing
