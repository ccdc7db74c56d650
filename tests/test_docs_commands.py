"""Every command in a ```bash block of README.md and docs/ is run by a test, as `tests/documented_commands.py` says.

Checked here without running anything: the table lists exactly the documented commands, and each test it names
exists and holds every word of its command verbatim (in its own source or in the module-level helpers and
constants it uses). A command no test runs has no place in a bash block.
"""

from __future__ import annotations

import pytest
from docs_commands import (
    FENCE,
    doc_files,
    documented_commands,
    fences,
    missing_words,
    normalise,
    reached_text,
)
from documented_commands import COMMANDS

DOCUMENTED = documented_commands()


def test_every_documented_command_is_in_the_table():
    listed = {normalise(command) for command in COMMANDS}
    missing = {command: where for command, where in DOCUMENTED.items() if command not in listed}
    assert not missing, f"documented but not in tests/documented_commands.py: {missing}"


def test_every_table_entry_is_documented():
    stale = [command for command in COMMANDS if normalise(command) not in DOCUMENTED]
    assert not stale, f"in tests/documented_commands.py but in no bash block: {stale}"


def test_every_fence_names_its_language():
    """An untagged fence could hold a command the checks above never see."""
    untagged = [
        f"{fence.path.name}:{fence.line}"
        for path in doc_files()
        for fence in fences(path)
        if not fence.language
    ]
    assert not untagged, f"fences without a language (bash, python, text, ...): {untagged}"
    assert FENCE.match("```bash") and not FENCE.match("``bash")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_is_run_by_the_tests_it_names(command):
    tests, how = COMMANDS[command]
    assert tests and how
    for reference in tests:
        text = reached_text(reference)
        assert text is not None, f"{reference}: no such test function (for {command!r})"
        assert not missing_words(command, text), (
            f"{reference} lacks {missing_words(command, text)} of {command!r}"
        )


def test_the_word_check_can_fail():
    text = reached_text("tests/test_cli.py::test_readme_dry_run_with_overrides_as_written")
    assert text is not None and not missing_words(
        "python launch.py recipes/blip_progressive.py training.epochs=3 data.train=/data/train.json --dry-run",
        text,
    )
    assert missing_words(
        "python launch.py recipes/blip_progressive.py training.epochs=4 --dry-run", text
    ) == ["training.epochs=4"]


def test_every_recipe_has_its_demo_command_on_a_model_page():
    """A user looking for a recipe's offline demo finds it on the model pages, exactly as typed."""
    from conftest import ROOT

    pages = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "models").glob("*.md")))
    missing = [
        f"python launch.py recipes/{recipe.name} --demo"
        for recipe in sorted((ROOT / "recipes").glob("*.py"))
        if f"python launch.py recipes/{recipe.name} --demo" not in pages
    ]
    assert not missing, f"no model page gives these demo commands: {missing}"
