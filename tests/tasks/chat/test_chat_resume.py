"""Exact resume of a chat recipe: `recipes/smolvlm_progressive.py --demo`, shortened, SIGKILLed right after its
first vision stage opened and rerun with the same command, ends bit for bit where the uninterrupted run ends
(the pattern of tests/test_resume.py, its helpers reused).

3 epochs x 4 steps of 8 conversations, a checkpoint every 3 steps inside an epoch, the stage (epoch 2) opening at
step 8. The child holds at the end of step 10 and is killed there: checkpoint-9 is the last complete one, so the
rerun resumes past the stage boundary (the stage re-derived from the step, its block's optimizer state kept) and
mid-epoch (the data order of epoch 2 continued). Compared with one uninterrupted run of the same command, started
alongside: the summary (losses, evaluations with the generated answers, the stage's step), the best and last
weights, the Adam state and every logged step.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_resume import Straight, _command, _env, _last_checkpoint, _run_until_killed, _untimed

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KILL_AT = "10"
OVERRIDES = (
    "--demo",
    "data.max_train_samples=32",
    "data.max_val_samples=8",
    "training.batch_size=8",
    "training.epochs=3",
    "training.warmup_steps=2",
    "training.save_steps=3",
    "training.save_total_limit=10",
    "training.logging_steps=1",
    "training.resume=auto",
    "evaluation.max_new_tokens=2",
    "reporting.plots=false",
)

# The shipped recipe with a hold point: at the end of step HOLD_AT (first time only) it notes the step and waits
# to be killed.
RECIPE = f"""
import os, runpy, time
from pathlib import Path
from transformers import TrainerCallback


class HoldForKill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        plan, done = os.environ.get("HOLD_AT"), Path(os.environ.get("HOLD_DONE_FILE", "/nonexistent"))
        if plan and str(state.global_step) in plan.split(",") and not done.exists():
            done.write_text(str(state.global_step) + "\\n")
            time.sleep(600)


recipe = runpy.run_path("{ROOT / "recipes" / "smolvlm_progressive.py"}")["recipe"]
recipe.callbacks = [HoldForKill()]
"""


def _run(recipe: Path, out: Path) -> list[str]:
    return [*_command(recipe, out), *OVERRIDES]


def test_a_chat_recipe_killed_after_its_stage_opened_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    import test_resume

    recipe = tmp_path / "smolvlm_resume.py"
    recipe.write_text(textwrap.dedent(RECIPE))
    monkeypatch.setattr(test_resume, "KILL_AT", (KILL_AT,))  # what `_env(hold=True)` plans
    monkeypatch.setattr(test_resume, "_command", lambda r, out: _run(r, out))  # Straight's command too
    straight = Straight(recipe, tmp_path / "straight", tmp_path / "straight.log")
    try:
        killed, done, log = tmp_path / "killed", tmp_path / "held", tmp_path / "killed.log"
        _run_until_killed(_run(recipe, killed), _env(True, done), done, KILL_AT, log)
        assert _last_checkpoint(killed).name == "checkpoint-9"
        with log.open("a") as sink:
            rerun = subprocess.run(
                _run(recipe, killed), cwd=ROOT, env=_env(False, done), stdout=sink, stderr=sink
            )
        assert rerun.returncode == 0, log.read_text()[-3000:]
        out = straight.wait()
    finally:
        if straight.proc.poll() is None:
            straight.proc.kill()

    a, b = (json.loads((d / "training_summary.json").read_text()) for d in (out, killed))
    for key in ("global_steps", "train_loss", "best_metric", "best_epoch", "final_metrics", "best_metrics"):
        assert _untimed(a[key]) == _untimed(b[key]), key
    assert a["global_steps"] == 12 and a["stages_opened_at_step"] == b["stages_opened_at_step"] == {"0": 8}
    assert _untimed(a["examples"]) == _untimed(b["examples"])  # the generated answers
    for a_path, b_path in (
        (out / "best" / "model.safetensors", killed / "best" / "model.safetensors"),
        (_last_checkpoint(out) / "model.safetensors", _last_checkpoint(killed) / "model.safetensors"),
    ):
        want, got = load_file(str(a_path)), load_file(str(b_path))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), a_path
    a_opt, b_opt = (
        torch.load(_last_checkpoint(d) / "optimizer.pt", weights_only=True) for d in (out, killed)
    )
    assert a_opt["param_groups"] == b_opt["param_groups"]
    for idx, state in a_opt["state"].items():
        assert all(torch.equal(v, b_opt["state"][idx][k]) for k, v in state.items()), idx
    a_hist, b_hist = (
        json.loads((_last_checkpoint(d) / "trainer_state.json").read_text())["log_history"]
        for d in (out, killed)
    )
    assert _untimed(a_hist) == _untimed(b_hist) and sum("loss" in e for e in a_hist) == 12
    assert sum("eval_loss" in e for e in a_hist) == 4  # before training + 3 epochs
