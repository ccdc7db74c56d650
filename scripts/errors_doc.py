"""Regenerate docs/errors.md from the messages the bad-input catalogue actually produced.

ERROR_CATALOGUE_OUT=/tmp/errors.jsonl .venv/bin/python -m pytest -q tests/test_bad_inputs.py
.venv/bin/python scripts/errors_doc.py /tmp/errors.jsonl > docs/errors.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import test_bad_inputs as catalogue  # noqa: E402

HEADER = """# Bad inputs and the errors a user sees

Every case below is a test in `tests/test_bad_inputs.py`: `launch.py` exits with status 2 and prints one
paragraph starting with `error:` (no traceback). The message names the file (and line) or the recipe key,
says what is wrong and what to do. Paths under a temporary test directory are shown as `<tmp>/`.

Data problems follow the recipe's `data.on_bad_sample`: `"fail"` (default) stops with the messages below;
`"skip"` drops missing or unreadable images, unusable caption entries and malformed JSONL lines, counts them
per split and reason, and reports them under `data` in `training_summary.json` (a split left empty still fails).

| # | bad input | command line (after `python launch.py`) | what the user sees |
|---|---|---|---|
"""

TOOLS_HEADER = """
## The tools

`python -m trainers.predict`, `trainers.app`, the VOC converter and `trainers.analysis.param_change` keep the
same promise: one `error:` paragraph and exit status 2. `trainers.predict` skips an image it cannot read, names
it on stderr and counts it in its closing line (`--on-bad-image fail` stops at it instead, as below).

| # | bad input | command line | what the user sees |
|---|---|---|---|
"""


def clean(text: str) -> str:
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s'\"]+/", "<tmp>/", text)
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), "<repo>")
    return text.replace("|", "\\|").replace("\n", " ")


def main(path: str) -> None:
    messages = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        match = re.search(r"\[([^\]]+)\]", record["test"])
        function = re.search(r"::(\w+)", record["test"])
        scenario = catalogue.SCENARIOS.get(function.group(1) if function else "")
        name = match.group(1) if match else scenario[0] if scenario else None
        if name:  # a message from a test outside the catalogue's tables (e.g. the app's port) has no row
            messages[name] = record["message"]
    rows = []
    for case, argv, _ in catalogue.IN_PROCESS:
        shown = argv(_FakeFiles())
        rows.append((case, " ".join(str(a) for a in shown)))
    for case, argv, _ in catalogue.SUBPROCESS:
        rows.append((case, " ".join(re.sub(r"\{([^}]+)\}", r"<tmp>/\1", a) for a in argv)))
    rows += list(catalogue.SCENARIOS.values())
    for case, argv, _ in catalogue.MORE_IN_PROCESS:  # reruns, metric names, data paths
        rows.append((case, " ".join(str(a) for a in argv(_FakeFiles()))))
    for case, argv, _ in catalogue.DATA_IN_PROCESS:  # the newer families' data, files that are not UTF-8
        rows.append((case, " ".join(str(a) for a in argv(_FakeFiles()))))
    for case, argv, _, env in catalogue.ENVIRONMENT_IN_PROCESS:  # DeepSpeed configs, YAML, dict keys, java
        shown = " ".join(str(a) for a in argv(_FakeFiles()))
        rows.append((case, f"{shown} (PATH without java)" if env.get("PATH") else shown))
    out = [HEADER]
    for i, (case, command) in enumerate(rows, 1):
        message = messages.get(
            case,
            "usage: launch.py ... error: argument --launcher: invalid choice: 'mpirun' "
            "(choose from none, accelerate, torchrun, deepspeed, slurm)",
        )
        out.append(f"| {i} | {case} | `{clean(command)}` | {clean(message)} |\n")
    out.append(TOOLS_HEADER)
    for i, (case, tool, argv, _) in enumerate(catalogue.TOOL_CASES, len(rows) + 1):
        command = " ".join(["python -m", catalogue.TOOLS[tool], *(str(a) for a in argv(_FakeFiles()))])
        out.append(f"| {i} | {case} | `{clean(command)}` | {clean(messages.get(case, ''))} |\n")
    sys.stdout.write("".join(out))


class _FakeFiles(dict):
    def __missing__(self, key: str) -> Path:
        return Path(f"<tmp>/{key}")


if __name__ == "__main__":
    main(sys.argv[1])
