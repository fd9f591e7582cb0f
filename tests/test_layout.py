"""The package's shape: no import cycle between rlhfkit modules (imports inside functions count too), no module
over 700 lines and no function over 100 lines unless a comment says why it must be."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlhfkit"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100
WAIVER = "# long:"  # a comment starting with this, right above a def (or at a module's top), says why it is long


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the rlhfkit modules it imports, at any depth of its code (``from a import b`` counts as ``a.b`` when
    that is a module, else ``a``)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    deps.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def _waived(lines: list[str], lineno: int) -> bool:
    """Whether the lines just above ``lineno`` (1-based; decorators and comments skipped) hold a waiver."""
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("#", "@")):
        if lines[i].strip().startswith(WAIVER):
            return True
        i -= 1
    return False


def test_modules_and_functions_are_small():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(line.startswith(WAIVER) for line in lines[:40]):
            too_long.append(f"module {name}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not _waived(lines, start):
                    too_long.append(f"function {name}.{node.name} (line {node.lineno}): {n} lines")
    assert not too_long, "over the size limits without a '# long:' comment saying why: " + "; ".join(too_long)


# Modules that define config classes or the registry: checking a config must never import a trainer.
CONFIG_MODULES = (
    "rlhfkit.core.arguments",
    "rlhfkit.reward.config",
    "rlhfkit.rl.configs",
    "rlhfkit.rl.ppo.config",
    "rlhfkit.rl.algorithms",
    "rlhfkit.monitors.config",
    "rlhfkit.pipeline.config",
    "rlhfkit.pipeline.validate",
)
# rlhfkit modules that define or drive a trainer.
TRAINER_MODULES = (
    "rlhfkit.sft",
    "rlhfkit.train",
    "rlhfkit.reward.trainer",
    "rlhfkit.rl.ppo.trainer",
    "rlhfkit.rl.ppo.run",
    "rlhfkit.rl.grpo_rloo",
    "rlhfkit.rl.dpo",
    "rlhfkit.rl.best_of_n",
    "rlhfkit.pipeline.stages",
    "rlhfkit.pipeline.runner",
)
MAX_ROOT_MODULES = 8


def load_time_graph() -> dict[str, set[str]]:
    """module -> what importing it loads: its module-level imports (not those inside functions), plus the
    ``__init__`` of every package on the way; third-party modules are kept by name (``trl``, ``trl:GRPOTrainer``)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    deps.add(candidate if candidate in modules else node.module)
                    if not node.module.startswith("rlhfkit"):
                        deps.add(f"{node.module}:{alias.name}")
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        for dep in list(deps):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            parts = dep.split(":")[0].split(".")
            deps.update(".".join(parts[:k]) for k in range(1, len(parts)))
        graph[name] = {d for d in deps if d != name}
    return graph


def loaded_by(module: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def is_trainer(dep: str) -> bool:
    name = dep.split(":")[-1]
    return (
        dep in TRAINER_MODULES
        or (dep.startswith(("trl", "transformers")) and name.endswith("Trainer"))
        or dep == "transformers.trainer"
        or (dep.startswith("trl.trainer.") and dep.split(":")[0].endswith("_trainer"))
    )


def test_is_trainer_knows_a_trainer():
    assert is_trainer("trl:GRPOTrainer") and is_trainer("rlhfkit.rl.dpo") and is_trainer("trl.trainer.dpo_trainer")
    assert not is_trainer("trl:GRPOConfig") and not is_trainer("rlhfkit.rl.configs")
    graph = {"a.config": {"a.helper"}, "a.helper": {"trl:DPOTrainer"}}
    assert "trl:DPOTrainer" in loaded_by("a.config", graph)


def test_no_config_module_imports_a_trainer():
    graph = load_time_graph()
    found = {m: sorted(d for d in loaded_by(m, graph) if is_trainer(d)) for m in CONFIG_MODULES}
    assert set(CONFIG_MODULES) <= set(graph), set(CONFIG_MODULES) - set(graph)
    assert not any(found.values()), {m: d for m, d in found.items() if d}


def test_the_root_holds_few_modules():
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(root) <= MAX_ROOT_MODULES, root
