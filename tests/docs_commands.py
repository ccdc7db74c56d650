"""Read the shell commands out of the Markdown docs and find the text a test function reaches.

A documented command is a line of a ```bash fence in README.md or docs/**/*.md (backslash continuations joined,
a trailing `# comment` dropped, whitespace collapsed). Every other fence must name its language (`python` for
recipe code, `text` for output), so a command cannot hide in an untagged block.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
COMMAND_LANGUAGES = ("bash",)
# `python launch.py ARGS` run in-process is `launch.main([ARGS])` (the tests' `launch_in_process` calls it), or,
# without the argument parser, `load_recipe(..., demo=True)` then `setup_run` + `complete_run`
ALIASES = {"launch.py": ("launch.main(", "launch_in_process(", "complete_run("), "--demo": ("demo=True",)}


@dataclass(frozen=True)
class Fence:
    """One fenced block: where it starts, its language tag and its lines."""

    path: Path
    line: int
    language: str
    lines: tuple[str, ...]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fences(path: Path) -> list[Fence]:
    found, current, start, language = [], None, 0, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            current, start, language = [], number, match.group(2)
        elif current is not None and match and not match.group(2):
            found.append(Fence(path, start, language, tuple(current)))
            current = None
        elif current is not None:
            current.append(line)
    return found


def strip_comment(line: str) -> str:
    """Drop a trailing `# comment` that is not inside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def normalise(command: str) -> str:
    return " ".join(command.split())


def commands_in(fence: Fence) -> list[str]:
    commands, pending = [], ""
    for raw in fence.lines:
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = normalise(pending + line)
        pending = ""
        if command:
            commands.append(command)
    return commands


def documented_commands() -> dict[str, list[str]]:
    """Each documented command → where it is written (`README.md:12`)."""
    where: dict[str, list[str]] = {}
    for path in doc_files():
        for fence in fences(path):
            if fence.language in COMMAND_LANGUAGES:
                for command in commands_in(fence):
                    where.setdefault(command, []).append(f"{path.relative_to(ROOT)}:{fence.line}")
    return where


def words(command: str) -> list[str]:
    """The words a test must contain: the shell words, less the interpreter (tests run `sys.executable`)."""
    parts = shlex.split(command)
    if parts and parts[0] == "python":
        parts = parts[1:]
    return parts


def test_file(reference: str) -> tuple[Path, str]:
    """`tests/test_x.py::test_name` → the file (found by name if the file moved) and the function name."""
    file, _, function = reference.partition("::")
    path = ROOT / file
    if not path.exists():
        moved = [p for p in TESTS.rglob(Path(file).name) if p.is_file()]
        path = moved[0] if len(moved) == 1 else path
    return path, function


@cache
def _module(path: Path) -> tuple[str, dict[str, ast.AST]]:
    source = path.read_text()
    tree = ast.parse(source)
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return source, names


def _segment(source: str, node: ast.AST) -> str:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return "\n".join(source.splitlines()[first - 1 : node.end_lineno])


def reached_text(reference: str) -> str | None:
    """The test function's source (decorators included) plus that of every module-level name it uses, directly
    or through those (a helper that prepends `launch.py`, a recipe constant); None when there is no such test."""
    path, function = test_file(reference)
    if not path.exists():
        return None
    source, names = _module(path)
    if function not in names or not isinstance(names[function], ast.FunctionDef):
        return None
    seen, todo, texts = set(), [function], []
    while todo:
        name = todo.pop()
        if name in seen or name not in names:
            continue
        seen.add(name)
        node = names[name]
        texts.append(_segment(source, node))
        todo.extend(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        todo.extend(a.arg for a in ast.walk(node) if isinstance(a, ast.arg))  # fixtures defined in the module
    return "\n".join(texts)


def missing_words(command: str, text: str) -> list[str]:
    """The command's words that the test's text does not contain verbatim."""
    return [word for word in words(command) if not any(w in text for w in (word, *ALIASES.get(word, ())))]
