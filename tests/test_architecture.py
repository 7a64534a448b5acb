"""The layout ARCHITECTURE.md describes: every module imports, data flows one way, no import
cycles, no room reaches into another's private names."""

import ast
import importlib
from pathlib import Path

import pytest
from tabs import framework

SRC = Path(__file__).parents[1] / "src"

# The rooms, lowest first: a module may import its own room and the rooms below it, never
# one above (data -> models -> training -> run record -> cli/serve). Listed by module name
# under lenet (a package stands for everything in it).
ROOMS = [
    ("base", {"lenet", "errors", "atomic", "tables", "lock", "names"}),
    ("data", {"data"}),
    ("models", {"models", "model_settings", "summary", "diagram", "device", "native"}),
    ("training", {"config", "optim", "training", "checkpoint", "console", "plots",
                  "distributed"}),
    ("run record", {"rundir", "sinks", "fitting", "run", "runner", "inference", "evaluation",
                    "activations", "export", "exports", "ood", "compare", "sweep", "sweep_pool",
                    "sweep_ray"}),
    ("applications", {"bench", "d2l", "cli", "serve", "__main__"}),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "lenet").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def room(module: str) -> int:
    top = module.split(".")[1] if "." in module else "lenet"
    for level, (_, names) in enumerate(ROOMS):
        if top in names:
            return level
    raise AssertionError(f"{module} is in no room: add it to ROOMS and ARCHITECTURE.md")


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
        framework(NEEDS[module])
    importlib.import_module(module)


def test_data_flows_one_way():
    wrong = [f"{m} ({ROOMS[room(m)][0]}) imports {t} ({ROOMS[room(t)][0]})"
             for m, path in modules().items() for t in imports(m, path) if room(t) > room(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: imports(m, p, top_level_only=True) for m, p in modules().items()}
    state: dict[str, str] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(t):], t]))
            if t not in state:
                visit(t, [*trail, t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


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
             "d2l/fused.py", "models.py"]
    wrong = [f"{name}:{node.lineno}: {ast.unparse(node)}" for name in files
             for node in ast.walk(ast.parse((SRC / "lenet" / name).read_text()))
             if isinstance(node, ast.Attribute) and node.attr.startswith("_")
             and not node.attr.startswith("__") and ast.unparse(node.value) != "self"]
    assert not wrong, "\n".join(wrong)
