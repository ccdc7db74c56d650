"""Kill-and-resume: a run SIGKILLed mid-epoch (several times) and restarted with the same command ends
exactly where an uninterrupted run ends.

Equality is bit-exact (CPU, one thread, seeded, dropout 0): final and best weights, the optimizer state
of the last checkpoint, every logged loss / grad norm / learning rate, every evaluation metric, the step
each unfreezing stage opened at and the early-stopping decision. Timing fields are excluded.

The recipe trains 5 epochs x 8 steps with a checkpoint every 3 steps inside an epoch, a stage opening
at epoch 2 (step 16) and early stopping that fires after the 4th evaluation (step 32; "eval loss, higher
is better" never improves after the first evaluation, which makes it fire deterministically: patience 2,
counted from the stage's opening at step 16, so evaluations 24 and 32). The child
holds (sleeps) at planned points and the test kills it there with SIGKILL:
  step 5  (epoch 0, after checkpoint-3)  -> resumes mid-epoch 0 from checkpoint-3
  step 17 (epoch 2, right after the stage opened at 16) -> resumes from checkpoint-16, at the boundary
  inside the save of checkpoint-21 (model, optimizer and RNG state written, manifest not yet)
           -> `tmp-checkpoint-21/` is left behind and ignored; resumes from checkpoint-18, past the
              boundary: the stage is re-derived from the step, its optimizer state not reset again
A fake incomplete `checkpoint-999/` and a stray `tmp-checkpoint-30/` are planted before the last restart:
neither may be picked up.

A second run is killed at moments nobody planned: three starts are SIGKILLed after random steps (before
the last), each at a random fraction of the following step's time (in its backward pass, optimizer step,
evaluation or checkpoint save, whichever comes), then the command runs to the end; the seed is printed and
`KILL_SEED=<seed>` replays the choice. Both killed runs are compared with one uninterrupted run of the same
command (module fixture, started in the background).

Killed after the last checkpoint of a run that early stopping ended (while it loads and saves the best model),
the rerun resumes from that checkpoint, trains no further step and writes the same best model and summary.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, SHAPES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KILL_AT = ("5", "17", "save-21")
RANDOM_KILLS = 3
TOTAL_STEPS, STEPS_PER_EPOCH = 32, 8
TIMING_KEYS = ("runtime", "per_second", "epoch_seconds", "wall_seconds", "flos")

RECIPE = """
import os, time
from pathlib import Path
from transformers import TrainerCallback
from trainers.models.blip import TinyBlipSpec
from trainers.recipe import (CaptionData, EarlyStopping, Evaluation, Freeze, Model, Recipe, Reporting,
                             Stage, Training, Unfreeze)
from trainers.trainer import RecipeTrainer


def hold(point):
    '''Test hook: at a planned point (first time only), note it and wait to be killed.'''
    plan = os.environ.get("HOLD_AT")
    if not plan:
        return
    done_file = Path(os.environ["HOLD_DONE_FILE"])
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    if point in plan.split(",") and point not in done:
        with done_file.open("a") as f:
            f.write(point + "\\n")
        time.sleep(600)


class HoldForKill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        hold(str(state.global_step))


_save_rng_state = RecipeTrainer._save_rng_state


def _save_rng_state_then_hold(self, output_dir):
    _save_rng_state(self, output_dir)
    hold(f"save-{{self.state.global_step}}")


RecipeTrainer._save_rng_state = _save_rng_state_then_hold


recipe = Recipe(
    name="resume",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(train="{shapes}/train.json", val="{shapes}/val.json", images="{shapes}/images",
                     max_train_samples=32, max_val_samples=4),
    freeze=[Freeze("vision_model"), Unfreeze("vision_model.encoder.layers[-1:]")],
    stages=[Stage(epoch=2, unfreeze="vision_model.encoder.layers[-3:]")],
    training=Training(epochs=5, batch_size=4, lr=1e-3, warmup_steps=4, weight_decay=0.01, logging_steps=1,
                      save_steps=3, save_total_limit=2),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=1, max_length=8, batch_size=4),
    early_stopping=EarlyStopping(metric="loss", mode="max", patience=2),
    reporting=Reporting(wandb=False, plots=False),
    callbacks=[HoldForKill()],
)
"""


def _env(hold: bool, done_file: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HOLD_AT", None)
    if hold:
        env["HOLD_AT"] = ",".join(KILL_AT)
        env["HOLD_DONE_FILE"] = str(done_file)
    return env


def _command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "launch.py", str(recipe), "--output-dir", str(out)]


def _held(done_file: Path) -> set[str]:
    return set(done_file.read_text().split()) if done_file.exists() else set()


def _run_until_killed(cmd: list[str], env: dict[str, str], done_file: Path, step: str, log: Path) -> None:
    with log.open("a") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while step not in _held(done_file):
            if proc.poll() is not None:
                raise AssertionError(
                    f"run ended (rc {proc.returncode}) before step {step}:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"step {step} not reached in 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _untimed(record):
    if isinstance(record, dict):
        return {k: _untimed(v) for k, v in record.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(record, list):
        return [_untimed(v) for v in record]
    return record


def _last_checkpoint(out: Path) -> Path:
    complete = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "checkpoint.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]))


class Straight:
    """The uninterrupted run, started in the background; `wait()` returns its output dir once it finished."""

    def __init__(self, recipe: Path, out: Path, log: Path) -> None:
        self.out, self.log = out, log
        self.proc = subprocess.Popen(
            _command(recipe, out),
            cwd=ROOT,
            env=_env(False, log),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait(self) -> Path:
        assert self.proc.wait(timeout=600) == 0, self.log.read_text()[-3000:]
        return self.out


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    recipe = tmp_path_factory.mktemp("resume") / "resume_recipe.py"
    recipe.write_text(textwrap.dedent(RECIPE).format(shapes=SHAPES))
    return recipe


@pytest.fixture(scope="module")
def straight(recipe_file: Path) -> Straight:
    # alongside the killed runs (one thread each, two cores)
    run = Straight(recipe_file, recipe_file.parent / "straight", recipe_file.parent / "straight.log")
    yield run
    if run.proc.poll() is None:
        run.proc.kill()


def assert_same_as_uninterrupted(straight: Path, killed: Path) -> None:
    """Bit for bit: summary, best and last weights, optimizer state, every logged step and evaluation."""
    a_sum = json.loads((straight / "training_summary.json").read_text())
    b_sum = json.loads((killed / "training_summary.json").read_text())
    for key in (
        "global_steps",
        "epochs_completed",
        "train_loss",
        "best_metric",
        "best_epoch",
        "final_metrics",
        "best_metrics",
        "early_stopping",
        "stages_opened_at_step",
        "params",
        "examples",
    ):
        assert _untimed(a_sum[key]) == _untimed(b_sum[key]), key
    assert a_sum["global_steps"] == 32 and a_sum["early_stopping"]["stopped_at_step"] == 32
    assert a_sum["stages_opened_at_step"] == {"0": 16}

    # weights: best (loaded back at the end) and the last checkpoint, bit for bit
    for rel in ("best/model.safetensors", None):
        a_path = straight / rel if rel else _last_checkpoint(straight) / "model.safetensors"
        b_path = killed / rel if rel else _last_checkpoint(killed) / "model.safetensors"
        a, b = load_file(str(a_path)), load_file(str(b_path))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{a_path.parent.name}: {name}"
    assert _last_checkpoint(straight).name == _last_checkpoint(killed).name == "checkpoint-32"

    # optimizer state (Adam moments) and LR schedule of the last checkpoint
    a_opt = torch.load(_last_checkpoint(straight) / "optimizer.pt", weights_only=True)
    b_opt = torch.load(_last_checkpoint(killed) / "optimizer.pt", weights_only=True)
    assert a_opt["param_groups"] == b_opt["param_groups"]
    for idx, state in a_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b_opt["state"][idx][key]), (idx, key)

    # every logged step (loss, grad norm, LR) and evaluation; data order shows in the per-step losses
    a_hist = json.loads((_last_checkpoint(straight) / "trainer_state.json").read_text())["log_history"]
    b_hist = json.loads((_last_checkpoint(killed) / "trainer_state.json").read_text())["log_history"]
    assert _untimed(a_hist) == _untimed(b_hist)
    assert sum("loss" in e for e in a_hist) == 32
    a_jsonl = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    b_jsonl = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert _untimed(a_jsonl) == _untimed(b_jsonl) and len(a_jsonl) == 5  # before training + 4 epochs
    # the manifest describes the checkpoint
    manifest = json.loads((_last_checkpoint(killed) / "checkpoint.json").read_text())
    assert manifest["step"] == 32 and manifest["complete"] and "model.safetensors" in manifest["files"]


def test_sigkill_mid_epoch_three_times_then_resume_equals_uninterrupted_run(
    tmp_path: Path, recipe_file, straight
):
    done_file = tmp_path / "held.txt"
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"

    started = time.monotonic()
    cmd = _command(recipe_file, killed)
    for step in KILL_AT:
        _run_until_killed(cmd, _env(True, done_file), done_file, step, log)
    # killed inside the save: the checkpoint exists only as tmp-, with its files but no manifest
    partial = killed / "checkpoints" / "tmp-checkpoint-21"
    assert (partial / "rng_state.pth").is_file() and not (partial / "checkpoint.json").exists()
    assert not (killed / "checkpoints" / "checkpoint-21").exists()
    # plant what a foreign copy or an older tool could leave: neither may be resumed from
    (killed / "checkpoints" / "checkpoint-999").mkdir()
    (killed / "checkpoints" / "checkpoint-999" / "trainer_state.json").write_text("{}")
    (killed / "checkpoints" / "tmp-checkpoint-30").mkdir()
    final = subprocess.run(
        cmd, cwd=ROOT, env=_env(True, done_file), capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr[-3000:]
    log.write_text(log.read_text() + final.stdout + final.stderr)
    text = log.read_text()
    # each restart resumed from the newest complete checkpoint before the kill
    for resumed_step in (3, 16, 18):
        assert f"checkpoint-{resumed_step} (global step {resumed_step}," in text, (
            f"no resume from step {resumed_step}"
        )
    assert "not resuming from" in text and "checkpoint-999" in text
    assert not (killed / "checkpoints" / "tmp-checkpoint-30").exists() and not partial.exists()
    assert_same_as_uninterrupted(straight.wait(), killed)
    print(f"kill-and-resume test: {time.monotonic() - started:.1f} s")


def _logged_steps(text: str) -> list[int]:
    """Global steps of the training-loss lines in `text` (logging_steps=1, 8 steps an epoch)."""
    return [
        round(float(e) * STEPS_PER_EPOCH) for e in re.findall(r"\{'loss': [^}]*'epoch': '([0-9.]+)'", text)
    ]


def _kill_between_steps(cmd: list[str], log: Path, step: int, fraction: float) -> tuple[bool, float]:
    """Start the command; once it logged `step`, SIGKILL it `fraction` of a step's time later.

    Returns (killed, seconds after the step's line). A step's time is the gap between this start's last two
    loss lines, so the kill lands anywhere before the next line: in the backward pass, the optimizer step, an
    evaluation or a checkpoint save, whatever that step is doing.
    """
    offset = log.stat().st_size
    with log.open("a") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(False, log), stdout=sink, stderr=subprocess.STDOUT)
    deadline, seen = time.monotonic() + 300, []
    stamps: dict[int, float] = {}
    while not seen or seen[-1] < step:
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended (rc {proc.returncode}) before step {step}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"step {step} not reached in 300 s:\n{log.read_text()[-3000:]}")
        seen = _logged_steps(log.read_text()[offset:])
        for s in seen:
            stamps.setdefault(s, time.monotonic())
        time.sleep(0.005)
    times = sorted(stamps.values())
    step_seconds = times[-1] - times[-2] if len(times) > 1 else 0.3
    delay = fraction * step_seconds
    time.sleep(delay)
    if proc.poll() is not None:
        return False, delay
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True, delay


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(
    tmp_path: Path, recipe_file, straight
):
    """RANDOM_KILLS kills, after random steps (before the last) at a random point of the step that follows."""
    seed = int(os.environ.get("KILL_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, TOTAL_STEPS - 1), RANDOM_KILLS))
    print(f"\nrandom kills: KILL_SEED={seed}, after steps {steps}")
    killed, log = tmp_path / "killed", tmp_path / "killed.log"
    log.touch()
    cmd = _command(recipe_file, killed)
    for step in steps:
        fraction = rng.random()
        was_killed, delay = _kill_between_steps(cmd, log, step, fraction)
        assert was_killed, f"the run ended before its kill after step {step}"
        left = sorted(p.name for p in (killed / "checkpoints").glob("*"))
        print(f"SIGKILL {delay:.3f} s ({fraction:.2f} of a step) after step {step}; left {left}")
    final = subprocess.run(cmd, cwd=ROOT, env=_env(False, log), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    log.write_text(log.read_text() + final.stdout + final.stderr)
    print("restarts resumed from:", re.findall(r"resuming from \S+/(checkpoint-\d+)", log.read_text()))
    assert_same_as_uninterrupted(straight.wait(), killed)


def test_sigkill_after_the_last_checkpoint_then_rerun_equals_uninterrupted_run(
    tmp_path: Path, recipe_file, straight
):
    """As if killed between the last checkpoint and the end: best/ and the summary not yet written."""
    killed = tmp_path / "killed"
    shutil.copytree(straight.wait(), killed)
    shutil.rmtree(killed / "best")
    (killed / "training_summary.json").unlink()
    rerun = subprocess.run(
        _command(recipe_file, killed),
        cwd=ROOT,
        env=_env(False, tmp_path / "unused"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_as_uninterrupted(straight.out, killed)
