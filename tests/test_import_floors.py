"""Imports point down the floors: no circle between modules, at most two imports from a lower floor upward.

Every module of `trainers/` (and `launch.py`) is read with `ast`; module-level and function-level imports
count alike, because a lazy import is still a dependency. A "module:attr" string that a registry resolves on
demand is not an import. Importing `a.b.c` from outside package `a.b` also runs `a/b/__init__.py`, so that
package counts as imported too.

Run as a script (`python tests/test_import_floors.py`) to print the floors, the circles and the upward imports.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "trainers"

# The floor table: a module named exactly gets that floor; otherwise the first pattern that matches it.
# Imports may point down or sideways within a floor; a new module must match a pattern here.
FLOORS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        0,
        "base",
        (
            "trainers",
            "trainers.errors",
            "trainers.atomic_files",
            "trainers.run_lock",
            "trainers.paths",
            "trainers.zero3",
            "trainers.lazy_imports",
            "trainers.data_policy",
            "trainers.text_files",
            "trainers.hub_probe",
        ),
    ),
    (
        1,
        "config",
        (
            "trainers.recipe",  # the public recipe API: resolves its names lazily, imports nothing
            "trainers.recipe.config",
            "trainers.recipe.overrides",
            "trainers.recipe.yaml_config",
            "trainers.recipe.diff",
            "trainers.data.*config",  # source_config and any torch-free config beside the readers
            "trainers.tasks.*.config",
            "trainers.plan_records",
        ),
    ),
    (
        2,
        "mechanics",
        (
            "trainers.freezing",
            "trainers.freezing.*",
            "trainers.optim",
            "trainers.optim.*",
            "trainers.lora",
            "trainers.lora.*",
            "trainers.data",
            "trainers.data.*",
            "trainers.metrics",
            "trainers.metrics.*",
            "trainers.launchers",
            "trainers.launchers.*",
            "trainers.distributed",
            "trainers.fsdp",
        ),
    ),
    (
        3,
        "plug-ins",
        ("trainers.models", "trainers.models.*", "trainers.tasks", "trainers.tasks.*"),
    ),
    (
        4,
        "run parts",
        (
            "trainers.plan",
            "trainers.evaluation",
            "trainers.trainer",
            "trainers.callbacks",
            "trainers.callbacks.*",
            "trainers.checkpoints",
            "trainers.rerun",
            "trainers.reporting",
            "trainers.reporting.*",
            "trainers.recipe.*",  # loading and validation against the family and task registries
        ),
    ),
    (
        5,
        "entry",
        (
            "trainers.run",
            "trainers.preflight",
            "trainers.launch_outcome",
            "trainers.predict",
            "trainers.app",
            "trainers.analysis",
            "trainers.analysis.*",
            "trainers.reporting.lora_vs_full",  # old path of analysis.lora_vs_full, kept for one release
            "launch",
        ),
    ),
)

MAX_UPWARD_IMPORTS = 2


def floor_of(module: str) -> int | None:
    """The floor of a dotted module name, or None when no pattern of the table matches it."""
    for floor, _name, patterns in FLOORS:
        if module in patterns:
            return floor
    for floor, _name, patterns in FLOORS:
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return floor
    return None


@dataclass(frozen=True)
class Import:
    """One edge of the graph: `source` imports `target` at `line`."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return (
            f"{self.source} (floor {floor_of(self.source)}) -> {self.target} (floor {floor_of(self.target)})"
        )


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file for every module of the package, plus `launch`."""
    modules = {"launch": root / "launch.py"}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(module: str, files: dict[str, Path]) -> bool:
    return module in files and files[module].name == "__init__.py"


def _absolute(node: ast.ImportFrom, module: str, files: dict[str, Path]) -> str:
    """The absolute module an `ImportFrom` names, resolving relative imports against `module`."""
    if not node.level:
        return node.module or ""
    package = module if _is_package(module, files) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _known(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a module of the project (`a.b.func` -> `a.b`)."""
    while name:
        if name in files:
            return name
        name = name.rpartition(".")[0]
    return None


def _runs_code(package: str, files: dict[str, Path]) -> bool:
    """Whether a package's `__init__` holds more than its docstring (an empty one imports nothing)."""
    body = ast.parse(files[package].read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def _with_packages(source: str, target: str, files: dict[str, Path]) -> Iterable[str]:
    """`target` and the packages above it whose `__init__` the import runs (those not containing `source`)."""
    yield target
    package = target.rpartition(".")[0]
    while package:
        inside = source == package or source.startswith(package + ".")
        if package in files and not inside and _runs_code(package, files):
            yield package
        package = package.rpartition(".")[0]


def imports_of(module: str, files: dict[str, Path]) -> list[Import]:
    """Every project module that `module` imports, at any depth of its code."""
    tree = ast.parse(files[module].read_text(encoding="utf-8"), filename=str(files[module]))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, files)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            targets = [name if name in files else base for name in targets]
        for name in targets:
            known = _known(name, files)
            if known is None:
                continue
            for target in _with_packages(module, known, files):
                if target != module:
                    found.setdefault(target, node.lineno)
    return [Import(module, target, line) for target, line in sorted(found.items())]


def import_graph(root: Path = ROOT) -> dict[str, list[Import]]:
    files = module_files(root)
    return {module: imports_of(module, files) for module in files}


def circles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for edge in edges:
                nxt = edge.target
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, []))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def folder_of(module: str) -> str:
    """The folder a module belongs to, one level under the package (`trainers.freezing.rules` -> `freezing`)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, list[Import]]) -> dict[str, list[Import]]:
    """The same imports between folders (`freezing` -> `optim`), for circles the module graph hides.

    A folder whose modules sit on several floors (`recipe`: its config on 1, its loading on 4) counts as one
    node per floor (`recipe@1`, `recipe@4`): the config half may be imported by what the loading half imports.
    """
    floors: dict[str, set[int | None]] = {}
    for module in graph:
        floors.setdefault(folder_of(module), set()).add(floor_of(module))

    def node(module: str) -> str:
        folder = folder_of(module)
        return folder if len(floors.get(folder, ())) == 1 else f"{folder}@{floor_of(module)}"

    folders: dict[str, dict[str, Import]] = {}
    for module, edges in graph.items():
        source = node(module)
        folders.setdefault(source, {})
        for edge in edges:
            target = node(edge.target)
            if target != source and folder_of(edge.target) != PACKAGE:
                folders[source].setdefault(target, Import(source, target, edge.line))
    return {folder: list(edges.values()) for folder, edges in folders.items()}


def upward_imports(graph: dict[str, list[Import]]) -> list[Import]:
    return [
        edge
        for edges in graph.values()
        for edge in edges
        if (floor_of(edge.target) or 0) > (floor_of(edge.source) or 0)
    ]


GRAPH = import_graph()


def test_every_module_has_a_floor():
    unplaced = [module for module in GRAPH if floor_of(module) is None]
    assert not unplaced, f"add these modules to FLOORS in {Path(__file__).name}: {unplaced}"


def test_the_graph_sees_lazy_imports_and_relative_imports(tmp_path):
    package = tmp_path / PACKAGE / "sub"
    package.mkdir(parents=True)
    (tmp_path / "launch.py").write_text("")
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (package / "__init__.py").write_text('"""Docstring."""\nfrom trainers.sub.low import x\n')
    (package / "low.py").write_text("def f():\n    from . import high\n")
    (package / "high.py").write_text("REGISTRY = {'x': 'trainers.sub.low:x'}\nimport trainers.other\n")
    (tmp_path / PACKAGE / "other.py").write_text("from trainers.sub.low import f\n")
    graph = import_graph(tmp_path)
    assert [edge.target for edge in graph["trainers.sub.low"]] == ["trainers.sub.high"]
    # the string in REGISTRY is no import; `other` runs trainers.sub's __init__ on the way to `low`
    assert [edge.target for edge in graph["trainers.sub.high"]] == ["trainers.other"]
    assert [edge.target for edge in graph["trainers.other"]] == ["trainers.sub", "trainers.sub.low"]
    assert circles(graph) == [["trainers.other", "trainers.sub", "trainers.sub.high", "trainers.sub.low"]]


def test_the_public_recipe_api_resolves_its_names_on_first_use():
    """`trainers.recipe` imports nothing itself: reading `trainers.recipe.config` (as the mechanics do) does not
    run the loader or a task's package; `from trainers.recipe import ...` still gives every public name."""
    code = (
        "import sys\n"
        "import trainers.recipe.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('trainers.tasks', 'trainers.recipe.loading'))))\n"
        "import trainers.recipe\n"
        "from trainers.recipe import CaptionData, RetrievalData, Augment, load_recipe, mean\n"
        "print(CaptionData.__module__, load_recipe.__module__, Augment.__module__)\n"
        "print(all(getattr(trainers.recipe, name) is not None for name in trainers.recipe.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.splitlines() == [
        "[]",
        "trainers.tasks.captioning.config trainers.recipe.loading trainers.data.augment_config",
        "True",
    ]


def test_no_import_circle_between_modules():
    assert circles(GRAPH) == []


def test_no_import_circle_between_folders():
    assert circles(package_graph(GRAPH)) == []


def test_at_most_two_imports_point_up_a_floor():
    upward = upward_imports(GRAPH)
    listing = "\n".join(f"  {edge}  (line {edge.line})" for edge in upward)
    assert len(upward) <= MAX_UPWARD_IMPORTS, f"{len(upward)} imports point up a floor:\n{listing}"


def main() -> int:
    upward = upward_imports(GRAPH)
    module_circles = circles(GRAPH)
    folder_circles = circles(package_graph(GRAPH))
    print(f"{len(GRAPH)} modules, {sum(len(edges) for edges in GRAPH.values())} imports")
    print(f"circles between modules: {len(module_circles)}")
    for component in module_circles:
        print("  " + " <-> ".join(component))
    print(f"circles between folders: {len(folder_circles)}")
    for component in folder_circles:
        print("  " + " <-> ".join(component))
    print(f"imports pointing up a floor: {len(upward)}")
    for edge in upward:
        print(f"  {edge}  (line {edge.line})")
    return 0 if not (upward[MAX_UPWARD_IMPORTS:] or module_circles or folder_circles) else 1


if __name__ == "__main__":
    sys.exit(main())
