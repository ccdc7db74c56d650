"""No secret reaches anything a run writes: JSON files, freeze report, metrics, checkpoints, the offline
W&B run (config, metadata, logs, the binary .wandb file), stdout and stderr.

Secrets are planted where users keep them: `WANDB_API_KEY`, `HF_TOKEN` and a custom `*_SECRET` in the
environment, and a token inside the recipe (a callback holding an API token, shown in recipe.json by its
repr, and a secret-named key in the recipe's `demo` mapping).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, SHAPES
from trainers.reporting.redact import REDACTED, is_secret_name, redact, redact_text, remember

pytestmark = pytest.mark.slow

PLANTED = {
    "WANDB_API_KEY": "deadbeef" * 5,  # W&B keys are 40 hex characters
    "HF_TOKEN": "hf_PlantedHubToken0123456789",
    "MY_SERVICE_SECRET": "s3cr3t-Planted-Value-42",
}
IN_RECIPE = "rcp_PlantedCallbackToken_9876"

RECIPE = """
from dataclasses import dataclass
from transformers import TrainerCallback
from trainers.models.blip import TinyBlipSpec
from trainers.recipe import CaptionData, Evaluation, Model, Recipe, Reporting, Training


@dataclass
class Notify(TrainerCallback):
    url: str = "https://example.invalid/hook"
    api_token: str = "{token}"


recipe = Recipe(
    name="secrets",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(train="{shapes}/train.json", val="{shapes}/val.json", images="{shapes}/images",
                     max_train_samples=16, max_val_samples=4),
    training=Training(epochs=1, batch_size=8, lr=1e-3, logging_steps=1, save_steps=1, resume="never"),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=1, max_length=8, batch_size=4),
    reporting=Reporting(wandb=True, wandb_mode="offline", plots=True),
    demo={{"reporting.run_name": "demo", "hub_token": "{token}"}},
    callbacks=[Notify()],
)
"""


def test_no_planted_secret_in_any_file_a_run_writes(tmp_path: Path):
    recipe = tmp_path / "secrets_recipe.py"
    recipe.write_text(textwrap.dedent(RECIPE).format(shapes=SHAPES, token=IN_RECIPE))
    out = tmp_path / "out"
    env = {**os.environ, **PLANTED, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WANDB_MODE", None)  # conftest disables W&B; this run must write its offline W&B files
    result = subprocess.run(
        [sys.executable, "launch.py", str(recipe), "--output-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    written = [p for p in out.rglob("*") if p.is_file()]
    names = {p.relative_to(out).as_posix() for p in written}
    # the scan covers what matters: summaries, checkpoints and the offline W&B run
    assert {
        "recipe.json",
        "plan.json",
        "training_summary.json",
        "metrics.jsonl",
        "freeze_report.txt",
    } <= names
    assert any(n.endswith(".wandb") for n in names), sorted(names)
    assert any("checkpoint-1/" in n for n in names)
    # offline, the W&B config lives in the binary run file: it holds the recipe, with the token redacted
    run_file = next(p for p in written if p.name.endswith(".wandb")).read_bytes()
    assert b"example.invalid" in run_file and REDACTED.encode() in run_file
    secrets = [*PLANTED.values(), IN_RECIPE]
    leaks = [
        (p.relative_to(out).as_posix(), s) for p in written for s in secrets if s.encode() in p.read_bytes()
    ]
    leaks += [("stdout/stderr", s) for s in secrets if s in result.stdout + result.stderr]
    assert not leaks, leaks
    # the secret-bearing fields are still there, visibly redacted
    recipe_json = (out / "recipe.json").read_text()
    assert REDACTED in recipe_json and "example.invalid" in recipe_json


def test_redaction_rules():
    assert all(
        is_secret_name(n)
        for n in (
            "HF_TOKEN",
            "hub_token",
            "WANDB_API_KEY",
            "aws_secret",
            "db_password",
            "private_key",
            "AUTH",
        )
    )
    assert not any(
        is_secret_name(n)
        for n in (
            "bos_token_id",
            "tokenizer",
            "max_tokens",
            "monkey",
            "keys_seen",
            "key",
            "metric_for_best_model",
            "author",
        )
    )
    remember("value-remembered-123")
    assert redact_text("url=https://x/?q=value-remembered-123&b=1") == f"url=https://x/?q={REDACTED}&b=1"
    assert redact_text("Notify(api_token='abc123', url='u')") == f"Notify(api_token='{REDACTED}', url='u')"
    assert redact_text("hf_token=abc123 training.lr=1e-4") == f"hf_token={REDACTED} training.lr=1e-4"
    assert redact({"a": {"HF_TOKEN": "x", "bos_token_id": 3}, "b": ["api_key=zzz"]}) == {
        "a": {"HF_TOKEN": REDACTED, "bos_token_id": 3},
        "b": [f"api_key={REDACTED}"],
    }
