"""W&B settings: `auto` goes online only with an API key, the group / tags of a Slurm sweep, and a resumed run
appending to the same W&B run (offline run files read back). The 2-rank run's W&B contents are checked in
tests/distributed/test_launchers_end_to_end.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from wandb_records import read_run

from conftest import ROOT
from trainers.recipe.config import Reporting
from trainers.reporting.wandb import configure_wandb, run_grouping

TINY = ROOT / "tests" / "distributed" / "tiny_recipe.py"
WANDB_ENV = (
    "WANDB_MODE",
    "WANDB_PROJECT",
    "WANDB_RUN_GROUP",
    "WANDB_JOB_TYPE",
    "WANDB_TAGS",
    "WANDB_DIR",
    "WANDB_DATA_DIR",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_API_KEY",
    "WANDB_SILENT",
    "WANDB_DISABLE_GIT",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_auto_mode_is_online_only_when_logged_in(clean_env, tmp_path):
    assert configure_wandb(Reporting(), tmp_path / "a") == ["wandb"]
    assert os.environ["WANDB_MODE"] == "offline"
    del os.environ["WANDB_MODE"]
    clean_env.write_text(f"machine api.wandb.ai\n  login user\n  password {'a1' * 20}\n")
    configure_wandb(Reporting(), tmp_path / "b")
    assert os.environ["WANDB_MODE"] == "online"
    del os.environ["WANDB_MODE"]
    assert configure_wandb(Reporting(wandb_mode="disabled"), tmp_path / "c") == []


def test_array_tasks_of_one_sweep_share_a_group():
    reporting = Reporting(wandb_tags=("blip",))
    env = {"SLURM_JOB_ID": "101", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "1"}
    group, job_type, tags = run_grouping(reporting, "r", "slurm", 2, env)
    other = run_grouping(
        reporting, "r", "slurm", 2, {**env, "SLURM_JOB_ID": "102", "SLURM_ARRAY_TASK_ID": "2"}
    )
    assert group == other[0] == "slurm-array-100" and job_type == "train"
    assert (
        tags == ["blip", "launcher:slurm", "zero:2", "slurm:101", "array-task:1"] and "slurm:102" in other[2]
    )
    assert run_grouping(Reporting(wandb_group="g"), "r", "none", None, env)[0] == "g"  # the recipe's wins
    assert "launcher:slurm" in run_grouping(reporting, "r", "none", None, env)[2]  # inside the submitted job
    assert run_grouping(reporting, "r", "torchrun", None, {})[:1] == ("r",)  # no Slurm: the recipe's name


def test_a_resumed_run_appends_to_the_same_wandb_run(clean_env, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    common = [
        "reporting.wandb=true",
        f"output_dir={out}",
        "data.max_train_samples=16",
        "evaluation.num_beams=1",
    ]
    for extra in (["training.epochs=1"], ["training.epochs=2", "training.resume=force"]):
        # each attempt a new process, as a restart is (W&B keeps process-wide state between runs in one process)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        result = subprocess.run(
            [sys.executable, "launch.py", str(TINY), *common, *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    run_id = (out / "wandb_run_id").read_text().strip()
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files), files
    first, second = (read_run(f) for f in files)
    assert first.run_id == second.run_id == run_id
    steps = [[r["train/global_step"] for r in w.history if "train/loss" in r] for w in (first, second)]
    assert steps == [[1, 2, 3, 4], [5, 6, 7, 8]]  # the second continues the step axis, repeats nothing
    # the stage (epoch 1 = after step 4) opened in the second attempt: one marker, at its step
    markers = [
        (w, r["stages/opened"], r["train/global_step"])
        for w, run in enumerate((first, second))
        for r in run.history
        if "stages/opened" in r
    ]
    assert markers == [(1, 0, 4)], markers
    assert Path(out / "training_summary.json").is_file()
