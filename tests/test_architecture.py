"""The layout ARCHITECTURE.md describes: every module imports, data flows one way, no import
cycles, no room reaches into another's private names."""

import ast
import importlib
from pathlib import Path

import pytest
from conftest import require

SRC = Path(__file__).parents[1] / "src"

# The rooms, lowest first: `ls src/lenet` (one package a room, and three modules: the
# public API's `__init__`, `__main__` and `errors`). A module may import its own room and
# the rooms below it, never one above (data -> models -> training -> run -> applications);
# the applications sit side by side.
ROOMS = [("base",), ("data",), ("models",), ("native",), ("training",), ("predict",),
         ("exports",), ("ood",), ("run",), ("sweeps",), ("cli", "serve", "d2l", "bench")]
TOP_LEVEL_MODULES = {"__init__", "__main__", "errors"}  # in the base room

# Optional extras: the only modules that may import each (inside a function, or at the top
# of a module that only that extra's users import).
OPTIONAL = {
    "ray": {"lenet.sweeps.on_ray", "lenet.sweeps.tune_search"},
    "optuna": {"lenet.sweeps.optuna_search", "lenet.sweeps.tune_search"},
    "fastapi": {"lenet.cli.serve", *(f"lenet.serve.{m}" for m in (
        "app", "middleware", "server", "decoding", "limits", "queries", "metrics", "service",
        "batching", "reading", "responses"))},
    "uvicorn": {"lenet.serve.server", "lenet.cli.serve"},
    "prometheus_client": {"lenet.serve.metrics"},
    "onnx": {"lenet.exports.to_onnx", "lenet.predict.predictor"},
    "onnxruntime": {"lenet.exports.to_onnx", "lenet.predict.predictor", "lenet.bench"},
    "jax": {"lenet.d2l.jax", "lenet.exports.to_flax", "lenet.exports.flax_module"},
    "flax": {"lenet.d2l.jax", "lenet.exports.flax_module"},
    "optax": {"lenet.d2l.jax"},
    "safetensors": {"lenet.exports.to_flax", "lenet.exports.flax_module"},
    "tensorflow": {"lenet.d2l.tensorflow", "lenet.exports.to_keras"},
    "keras": {"lenet.d2l.tensorflow", "lenet.exports.to_keras"},
    "tensorboard": {"lenet.run.sinks"},
    "skimage": {"lenet.ood.probes", "lenet.ood.exercise", "lenet.ood.photoset"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "lenet").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def room(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top == "__main__":  # `python -m lenet`: the command line
        return len(ROOMS) - 1
    if top in TOP_LEVEL_MODULES:
        return 0
    for level, names in enumerate(ROOMS):
        if top in names:
            return level
    raise AssertionError(f"{module} is in no room: add its folder to ROOMS and ARCHITECTURE.md")


def test_the_folders_are_the_rooms():
    folders = {p.name for p in (SRC / "lenet").iterdir() if (p / "__init__.py").exists()}
    modules_ = {p.stem for p in (SRC / "lenet").glob("*.py")}
    assert folders == {name for names in ROOMS for name in names}
    assert modules_ == TOP_LEVEL_MODULES


def imports(module: str, path: Path, *, top_level_only: bool = False) -> set[str]:
    """The lenet modules `module` imports (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    known = modules()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in nodes:
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lenet":
                continue
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if name in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lenet"}
    return found - {module}


# Modules that need an optional extra's framework: skipped where it is missing, failed in CI
NEEDS = {"lenet.d2l.jax": "jax", "lenet.d2l.tensorflow": "tensorflow",
         "lenet.exports.to_flax": "jax", "lenet.exports.flax_module": "flax",
         "lenet.exports.to_keras": "tensorflow"}


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "lenet.__main__"))
def test_every_module_imports(module):
    if module in NEEDS:
        require(NEEDS[module])
    importlib.import_module(module)


def test_data_flows_one_way():
    wrong = [f"{m} ({ROOMS[room(m)][0]}) imports {t} ({ROOMS[room(t)][0]})"
             for m, path in modules().items() for t in imports(m, path) if room(t) > room(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    """Every import counts, those inside functions too: a cycle is a cycle however late."""
    graph = {m: imports(m, p) for m, p in modules().items()}
    state: dict[str, str] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if t in {"lenet", "lenet.__main__"} or t.startswith(m + "."):
                continue  # the lazy public API; a package's own modules
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(t):], t]))
            if t not in state:
                visit(t, [*trail, t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_optional_extras_are_imported_only_where_listed():
    wrong = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                extra = name.split(".")[0]
                if extra in OPTIONAL and module not in OPTIONAL[extra]:
                    wrong.append(f"{module}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_room_imports_another_rooms_private_names():
    wrong = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                     .startswith("lenet")):
                wrong += [f"{module}: {a.name} from {node.module}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_the_fast_path_reads_no_private_torch_names():
    # The fused kernel's path works through public PyTorch only (issue 12): no private
    # attribute of anything but its own objects (`self._x`).
    files = ["native/fastpath.py", "native/guard.py", "native/lenet5.py", "native/network.py",
             "d2l/fused.py", "models/network.py"]
    wrong = [f"{name}:{node.lineno}: {ast.unparse(node)}" for name in files
             for node in ast.walk(ast.parse((SRC / "lenet" / name).read_text()))
             if isinstance(node, ast.Attribute) and node.attr.startswith("_")
             and not node.attr.startswith("__") and ast.unparse(node.value) != "self"]
    assert not wrong, "\n".join(wrong)
