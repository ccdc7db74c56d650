"""The rendered sbatch script and the preemption callback's decisions, without a cluster."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from conftest import ROOT
from trainers.callbacks import preemption
from trainers.launchers.slurm import TEMPLATE, prepare_job
from trainers.recipe import load_recipe

RECIPE = str(ROOT / "recipes" / "blip_progressive.py")
LAUNCH = str(ROOT / "launch.py")


def job_for(tmp_path, *overrides, sweep=()):
    recipe = load_recipe(RECIPE, [*overrides, f"output_dir={tmp_path}"], demo=True)
    return recipe, prepare_job(
        recipe,
        RECIPE,
        [*overrides],
        ["--demo"],
        LAUNCH,
        sweep,
        load=lambda path, extra: load_recipe(path, extra, demo=True),
    )


def test_multi_node_script_headers_and_per_node_rank(tmp_path):
    _, job = job_for(
        tmp_path,
        "slurm.nodes=2",
        "slurm.gpus_per_node=8",
        "slurm.partition=gpu",
        "slurm.time=12:00:00",
        "slurm.account=proj",
    )
    s = job.script
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=12:00:00",
        "#SBATCH --account=proj",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={tmp_path}/slurm/slurm-%j.out",
        "export NPROC_PER_NODE=8",
    ]:
        assert line in s.splitlines(), line
    assert "--cpus-per-task" not in s  # GPU job: the cluster's default
    # node rank evaluated on each node (single-quoted), torchrun ignores USR1, trap + background + wait loop
    assert '--node_rank="$SLURM_NODEID"' in s and '\'trap "" USR1; exec' in s
    assert "trap on_usr1 USR1" in s and 'launch.py "$@" &' in s and 'wait "$child"' in s
    assert f"output_dir={tmp_path}" in s and "launch.nproc=8 launch.nnodes=2" in s
    assert job.script_path == tmp_path / "slurm" / "job.sbatch"
    assert not job.script_path.exists()  # written on submit only
    bash = subprocess.run(["bash", "-n"], input=s, text=True, capture_output=True)
    assert bash.returncode == 0, bash.stderr


def test_cpu_job_asks_a_core_per_process(tmp_path):
    _, job = job_for(tmp_path, "launch.nproc=2", "slurm.signal_lead=0", "slurm.requeue=false")
    assert "#SBATCH --cpus-per-task=2" in job.script and "export NPROC_PER_NODE=2" in job.script
    assert "#SBATCH --signal" not in job.script and "#SBATCH --no-requeue" in job.script


def test_sweep_is_a_job_array_with_one_output_dir_per_variant(tmp_path):
    _, job = job_for(tmp_path, sweep=["training.lr=1e-4", "training.lr=1e-5 training.epochs=2"])
    assert job.is_array and "#SBATCH --array=0-1" in job.script
    assert f"{tmp_path}/slurm/slurm-%A_%a.out" in job.script
    assert f"0) set -- {RECIPE} training.lr=1e-4 --demo" in job.script
    assert f"output_dir={tmp_path}/sweep-1" in job.script and "training.epochs=2" in job.script


def test_sweep_variant_may_name_another_recipe_file(tmp_path):
    other = tmp_path / "other_freeze.py"  # e.g. the same recipe with other freeze rules
    other.write_text((ROOT / "recipes" / "blip_progressive.py").read_text())
    _, job = job_for(tmp_path, sweep=["training.lr=1e-4", f"{other} training.lr=1e-5"])
    assert f"1) set -- {other} training.lr=1e-5 --demo" in job.script


def test_sweep_with_a_bad_override_fails_before_submission(tmp_path):
    from trainers.errors import RecipeError

    with pytest.raises(RecipeError, match="training.lrr"):
        job_for(tmp_path, sweep=["training.lrr=1"])


def test_deepspeed_options_reach_the_job_as_overrides(tmp_path):
    """Inside the job `launch.py` runs under torchrun: like every launcher's workers, it gets `key=value`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_cli", LAUNCH)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.build_parser().parse_intermixed_args(
        [
            RECIPE,
            "--demo",
            "--launcher",
            "slurm",
            "--zero",
            "2",
            "--offload",
            "--nodes",
            "2",
            "training.lr=1e-4",
        ]
    )
    overrides = cli.overrides_for_job(args)
    assert overrides == ["training.lr=1e-4", "launch.zero=2", "launch.offload=True"]
    _, job = job_for(tmp_path, *overrides)
    assert "launch.zero=2 launch.offload=True --demo" in job.script and "--zero" not in job.script


def test_bad_sweep_through_the_slurm_launcher_ends_with_one_paragraph_and_exit_2(tmp_path):
    """`--launcher slurm` as a user runs it: a sweep variant with a mistyped key stops before anything is submitted."""
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            RECIPE,
            "--demo",
            "--launcher",
            "slurm",
            "--partition",
            "gpu",
            "--sweep",
            "training.lr=1e-4",
            "--sweep",
            "training.lrr=1e-5",
            f"output_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": str(tmp_path)},
    )  # no sbatch: it must not get that far
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "training.lrr" in last and "training.lr" in last
    assert result.stderr.count("error: ") == 1 and not (tmp_path / "slurm").exists()


def test_rendered_body_is_the_shipped_multi_node_script(tmp_path):
    _, job = job_for(tmp_path)
    body = TEMPLATE.read_text().split("# ---- launcher body", 1)[1].split("\n", 1)[1]
    assert job.script.endswith(body)
    for name in ("single_node.sbatch", "multi_node.sbatch"):
        text = (ROOT / "slurm" / name).read_text()
        assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
        assert subprocess.run(["bash", "-n", str(ROOT / "slurm" / name)]).returncode == 0


# ------------------------------------------------------------------------------- preemption callback


@pytest.fixture
def callback(tmp_path, monkeypatch):
    old = signal.getsignal(signal.SIGUSR1)
    preemption._received["count"] = 0
    cb = preemption.SlurmPreemption(tmp_path, job_id="42", wait_for_kill_s=0.1)
    yield cb
    signal.signal(signal.SIGUSR1, old)
    preemption._received["count"] = 0


def state(step: int, epoch: float, max_steps: int = 12):
    return SimpleNamespace(global_step=step, epoch=epoch, max_steps=max_steps, is_world_process_zero=True)


ARGS = SimpleNamespace(device="cpu", output_dir="unused")


def test_no_signal_changes_nothing(callback):
    control = callback.on_step_end(ARGS, state(2, 0.5), TrainerControl())
    assert not control.should_save and not control.should_training_stop and callback.stop_step is None


def test_signal_mid_epoch_saves_this_step_and_stops(callback):
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)  # arrives twice: still one decision
    control = callback.on_step_end(ARGS, state(2, 0.5), TrainerControl())
    assert control.should_save and control.should_training_stop and callback.stop_step == 2
    again = callback.on_step_end(ARGS, state(3, 0.75), TrainerControl())
    assert not again.should_save and callback.stop_step == 2


def test_signal_on_an_epochs_last_step_leaves_the_epoch_evaluation_and_save_to_run(callback):
    os.kill(os.getpid(), signal.SIGUSR1)
    control = callback.on_step_end(ARGS, state(4, 1.0), TrainerControl())
    assert callback.stop_step == 4 and not control.should_save and not control.should_training_stop


def test_signal_on_the_very_last_step_is_ignored(callback):
    os.kill(os.getpid(), signal.SIGUSR1)
    callback.on_step_end(ARGS, state(12, 3.0), TrainerControl())
    assert callback.stop_step is None


def fake_scontrol(tmp_path: Path, rc: int) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\nexit {rc}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_requeue_after_the_checkpoint_and_clear_exit_when_it_fails(callback, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_scontrol(tmp_path, rc=1)}:{os.environ['PATH']}")
    os.kill(os.getpid(), signal.SIGUSR1)
    callback.on_step_end(ARGS, state(2, 0.5), TrainerControl())
    args = SimpleNamespace(device="cpu", output_dir=str(tmp_path / "checkpoints"))
    with pytest.raises(SystemExit) as exc:
        callback.on_save(args, state(2, 0.5), TrainerControl())
    assert exc.value.code == preemption.REQUEUE_FAILED_EXIT
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "42"]
    record = (tmp_path / "preemptions.jsonl").read_text()
    assert '"step": 2' in record and "checkpoint-2" in record


def test_save_without_a_signal_does_not_requeue(callback, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_scontrol(tmp_path, rc=0)}:{os.environ['PATH']}")
    callback.on_save(ARGS, state(3, 1.0), TrainerControl())
    assert not (tmp_path / "scontrol.calls").exists()
