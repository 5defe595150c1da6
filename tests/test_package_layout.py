"""The layout of `ltx_core`: its modules import one another without a cycle.

A cycle means neither module can be read (or imported) without the other, and it is
usually hidden by an import inside a function; so every `import` and `from ... import`
counts, at module level or inside a function, with relative imports resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ltx_core"


def module_name(path: Path, package: Path) -> str:
    """`ltx_core/a/b.py` -> "ltx_core.a.b"; a package's `__init__.py` -> the package."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path) -> dict[str, Path]:
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every dotted name `path` imports, and each `from X import y` also as `X.y` (y may
    be a submodule); relative imports resolved against the module `name`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.level, node.module)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _resolve(package: str, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (itself excluded)."""
    known = modules(package)
    return {
        name: {target for target in imported_names(path, name) if target in known and target != name}
        for name, path in known.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first walk meets, each as a path `[a, b, ..., a]`; [] for none."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_graph_sees_relative_absolute_and_function_level_imports(tmp_path):
    files = {
        "__init__.py": "",
        "x.py": "from .y import f\n",
        "y.py": "def f():\n    from . import x  # hidden in a function: still a cycle\n",
        "sub/__init__.py": "",
        "sub/z.py": "from .. import y\nimport pkg.x\nimport os\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    graph = import_graph(tmp_path / "pkg")
    assert graph["pkg.x"] == {"pkg.y"} and graph["pkg.y"] == {"pkg", "pkg.x"}
    assert graph["pkg.sub.z"] == {"pkg", "pkg.x", "pkg.y"}
    assert find_cycles(graph) == [["pkg.x", "pkg.y", "pkg.x"]]


def test_the_find_cycles_helper_reports_a_cycle_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_ltx_core_modules_import_one_another_without_a_cycle():
    cycles = find_cycles(import_graph())
    shown = "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles in ltx_core:\n{shown}"


# A module a reader can hold in mind: past this, split it by what it holds.
MAX_MODULE_LINES = 460


def test_no_module_of_the_core_is_longer_than_a_reader_can_hold():
    long = {
        name: lines
        for name, path in modules(PACKAGE).items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these by what they hold: {long}"


def test_the_transformer_stays_a_model_that_knows_no_guidance_kernel_or_parallelism():
    """Guidance, speed kernels and parallelism plug in through its seams (DESIGN.md)."""
    source = (PACKAGE / "models" / "transformer.py").read_text(encoding="utf-8").lower()
    words = ("guidance", "stg", "cfg_", "triton", "fused_qk_rope", "ulysses", "torch.distributed", "all_to_all")
    assert [word for word in words if word in source] == []
