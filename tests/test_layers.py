"""The package's layers: every import, at the top of a module or inside a function, points down or sideways.

From the bottom: the shared modules at the top of ``genossm/`` (errors, atomic, paths, vocab, config, the workflow table)
< ``genossm/ops`` < ``genossm/models`` < ``genossm/data`` and ``genossm/tasks`` < ``workflows/`` <
``genossm/cli.py``. Nothing but ``cli.py`` imports ``genossm.cli``, and no modules import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"base": 0, "ops": 1, "models": 2, "data": 3, "tasks": 3, "workflows": 4, "cli": 5}


def module_files() -> dict[str, Path]:
    """Dotted name -> file, for the package and the workflow scripts (loaded as ``workflows.<name>`` here)."""
    files = {}
    for path in sorted((ROOT / "genossm").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    for path in sorted((ROOT / "workflows").glob("*.py")):
        files[f"workflows.{path.stem}"] = path
    return files


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "workflows":
        return "workflows"
    if module == "genossm.cli":
        return "cli"
    if len(parts) > 1 and parts[1] in ("ops", "models", "data", "tasks"):
        return parts[1]
    return "base"  # genossm, genossm.errors, genossm.atomic, genossm.paths, genossm.vocab, genossm.config, genossm.workflows


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, module: str, known: set[str]) -> set[str]:
    """The genossm modules ``path`` imports anywhere in it (top level or inside functions), as dotted names."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:  # `if TYPE_CHECKING:` imports never run: names for annotations only
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from genossm.models import hub` imports the module, not the package
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    found = set()
    for name in names:
        while name and name not in known:  # `genossm.models.hub.load_state` -> genossm.models.hub
            name = name.rpartition(".")[0]
        if name.startswith("genossm") and name != module and name != "genossm":
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imported(path, module, set(files)) for module, path in files.items()}


def test_no_import_points_up_a_layer():
    upward = [f"{module} ({layer(module)}) imports {target} ({layer(target)})"
              for module, targets in import_graph().items() for target in sorted(targets)
              if LAYERS[layer(target)] > LAYERS[layer(module)]]
    assert upward == []


def test_only_the_command_line_imports_genossm_cli():
    assert [module for module, targets in import_graph().items() if "genossm.cli" in targets] == []


def test_no_import_cycle():
    graph = import_graph()
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_check_sees_lazy_imports():
    graph = import_graph()
    assert "genossm.models.caduceus" in graph["genossm.models.hub"]  # imported inside from_pretrained
    assert "genossm.models.mamba" in graph["genossm.tasks.trainer"]  # imported inside fsdp_strategy
