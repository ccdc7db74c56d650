"""The pinned stack (`constraints.txt`, written by `make lock`): every distribution pyproject.toml names is pinned,
the environment the suite runs in has exactly those versions, and the set-up installs with the pins."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires, version

from conftest import ROOT

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {
        canonical(name): pinned
        for name, pinned in (line.split("==", 1) for line in lines if line and not line.startswith("#"))
    }


def named_in_pyproject() -> set[str]:
    """What the installed project requires, its extras included (pyproject.toml as pip read it)."""
    return {canonical(NAME.match(r).group()) for r in requires("vlm-finetune-launcher")}


def test_every_distribution_the_project_names_is_pinned_except_torch_which_pyproject_pins():
    missing = named_in_pyproject() - set(pins()) - {"torch"}
    assert not missing, f"not in constraints.txt (run `make lock`): {sorted(missing)}"
    assert "torch" not in pins() and '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()


def test_the_installed_versions_are_the_pinned_ones():
    differing = {}
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # pinned for a platform or an extra this environment lacks
            continue
        if installed != pinned:
            differing[name] = (installed, pinned)
    assert not differing, f"installed vs constraints.txt (run `make setup`): {differing}"


def test_the_setup_installs_the_stack_with_the_pins():
    script = (ROOT / "scripts" / "setup_venv.sh").read_text()
    stack_installs = [
        line for line in script.splitlines() if re.search(r"\$PIP install .*(-e |deepspeed)", line)
    ]
    assert len(stack_installs) == 2 and all("-c constraints.txt" in line for line in stack_installs), (
        stack_installs
    )
    assert "constraints.txt" in script.split("want=", 1)[1].splitlines()[0]  # a changed lock reinstalls
