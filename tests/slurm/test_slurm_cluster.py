"""`--launcher slurm` on a real Slurm: a two-node test cluster on this host (scripts/slurm_test_cluster.sh).

Three jobs of the tiny recipe run on it, submitted together so that they overlap:
  single      1 node x 2 processes, uninterrupted (the reference)
  preempt     the same, with W&B offline; USR1 to the batch shell at step 2 (`scancel --signal=USR1 --batch`)
  preempt2    2 nodes x 1 process with training.resume=never, USR1 to the job steps at step 4 (`scancel --signal=USR1`)
A preempted job must checkpoint at exactly that step, requeue itself, resume, and end with the same step
count and bit-identical weights as the uninterrupted run (2 nodes x 1 process trains exactly like 1 node x 2
processes: same world size, same shards, so one reference serves both). The cluster is installed if missing (root) and
stopped at the end; these tests do not skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

# The session fixtures install Slurm when missing and run three overlapping jobs, two of them requeued.
pytestmark = [pytest.mark.slurm, pytest.mark.distributed, pytest.mark.timeout(1800)]

CLUSTER = ROOT / "scripts" / "slurm_test_cluster.sh"
RECIPE = "tests/slurm/tiny_slurm_recipe.py"
STEPS = 6  # 24 samples / (2 ranks x batch 4) = 3 steps per epoch, 2 epochs
JOB_TIMEOUT = 420


def free_ports(count: int = 3) -> list[int]:
    """`count` distinct ports the OS reports free now (all held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def slurm_cluster():
    state = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    env = {**os.environ, "SLURM_TEST_PORTS": " ".join(map(str, free_ports()))}
    start = subprocess.run(
        ["bash", str(CLUSTER), "start", str(state)], env=env, capture_output=True, text=True, timeout=600
    )
    assert start.returncode == 0, f"test cluster did not start:\n{start.stdout}\n{start.stderr}"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        stop = subprocess.run(
            ["bash", str(CLUSTER), "stop", str(state)], env=env, capture_output=True, text=True, timeout=120
        )
        if stop.returncode == 0:
            shutil.rmtree(state, ignore_errors=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def launch(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def job_info(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if info.get("JobState") in {
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        }:
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} did not finish within {timeout}s: {job_info(job_id)}")


@dataclass
class Run:
    name: str
    out: Path
    job_id: str
    submit_stdout: str
    info: dict | None = None
    seconds: float = 0.0

    @property
    def log(self) -> str:
        return (self.out / "slurm" / f"slurm-{self.job_id}.out").read_text()

    def ranks(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.out / "test_ranks").glob("rank*.json"))]

    def final_checkpoint(self) -> Path:
        return self.out / "checkpoints" / f"checkpoint-{STEPS}" / "model.safetensors"


JOBS = {
    "single": ["--nproc", "2"],
    "preempt": ["--nproc", "2", "reporting.wandb=true"],
    "preempt2": ["--nodes", "2", "--nproc", "1", "training.resume=never"],  # a requeued job resumes anyway
}
PAUSE = {"preempt": ("2", ["--batch"]), "preempt2": ("4", [])}


def signal_when_paused(run: Run, scancel_flags: list[str], sent: dict) -> None:
    """Wait for the trainer's `paused` marker (a PENDING job defers signals), then send USR1."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline and not (run.out / "paused").exists():
        time.sleep(0.3)
    if (run.out / "paused").exists():
        result = subprocess.run(
            ["scancel", "--signal=USR1", *scancel_flags, run.job_id], capture_output=True, text=True
        )
        sent[run.name] = (result.returncode, result.stderr)


@pytest.fixture(scope="session")
def runs(slurm_cluster, tmp_path_factory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("slurm-runs")
    started = time.monotonic()

    def submit(name: str) -> Run:
        out = base / name
        env = {}
        if name in PAUSE:
            env["SLURM_TEST_PAUSE_AT"] = PAUSE[name][0]
        if name == "preempt":
            env["WANDB_MODE"] = "offline"
        result = launch(
            RECIPE, "--launcher", "slurm", "--time", "00:10:00", f"output_dir={out}", *JOBS[name], env=env
        )
        assert result.returncode == 0, f"{name}: submission failed\n{result.stdout}\n{result.stderr[-3000:]}"
        job_id = re.search(r"submitted batch job (\d+)", result.stdout).group(1)
        return Run(name, out, job_id, result.stdout)

    with ThreadPoolExecutor(len(JOBS)) as pool:
        submitted = dict(zip(JOBS, pool.map(submit, JOBS), strict=True))
    sent: dict[str, tuple] = {}
    watchers = [
        threading.Thread(target=signal_when_paused, args=(submitted[n], flags, sent), daemon=True)
        for n, (_, flags) in PAUSE.items()
    ]
    for w in watchers:
        w.start()
    for run in submitted.values():
        run.info = wait_job(run.job_id)
        run.seconds = time.monotonic() - started
    for w in watchers:
        w.join(timeout=5)
    for name in PAUSE:
        run = submitted[name]
        assert sent.get(name, (1,))[0] == 0, (
            f"{name}: USR1 not sent ({sent.get(name)}); job {run.info.get('JobState')}, log:\n{run.log[-3000:]}"
        )
    print(
        "\n"
        + "\n".join(
            f"slurm job {r.name}: id {r.job_id}, done after {r.seconds:.0f}s, "
            f"restarts {r.info.get('Restarts')}"
            for r in submitted.values()
        )
    )
    return submitted


def assert_complete(run: Run, world_size: int = 2) -> None:
    assert run.info["JobState"] == "COMPLETED" and run.info["ExitCode"] == "0:0", (run.info, run.log[-3000:])
    assert f"done: {STEPS} steps" in run.log
    for name in [
        "recipe.json",
        "plan.json",
        "freeze_report.txt",
        "metrics.jsonl",
        "training_summary.json",
        "best/model.safetensors",
        "best/config.json",
        f"checkpoints/checkpoint-{STEPS}/trainer_state.json",
    ]:
        assert (run.out / name).is_file(), f"{run.name}: {name} missing"
    records = [json.loads(ln) for ln in (run.out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    # the evaluation before training once (a requeued job resumes without another), then one per epoch
    assert [r["epoch"] for r in records] == [0.0, 1.0, 2.0], records
    assert all("rouge_l" in r["eval"] for r in records)
    summary = json.loads((run.out / "training_summary.json").read_text())
    assert summary["global_steps"] == STEPS and summary["world_size"] == world_size


def logged_steps(log: str) -> list[float]:
    """The `epoch` of every training-loss line of node task 0 (logging_steps=1): one per optimizer step run."""
    return [float(e) for e in re.findall(r"^0: \{'loss': '[^']+', .*'epoch': '([0-9.]+)'\}", log, re.M)]


def assert_preempted_and_equal(run: Run, reference: Run, step: int) -> None:
    assert_complete(run)
    assert run.info["Restarts"] == "1", run.info
    assert "DUE TO JOB REQUEUE" in run.log
    assert "(restart 1)" in run.log
    preemptions = [json.loads(ln) for ln in (run.out / "preemptions.jsonl").read_text().splitlines()]
    assert [p["step"] for p in preemptions] == [step], preemptions
    assert preemptions[0]["restart_count"] == 0
    first_start, _ = run.log.split("(restart 1)", 1)
    assert f"checkpointing at step {step}" in first_start
    # one loss line per optimizer step over both starts: steps 1..step, then step+1..STEPS (none lost or repeated)
    steps_per_epoch = STEPS // 2
    expected = [round(i / steps_per_epoch, 2) for i in range(1, STEPS + 1)]
    assert [round(e, 2) for e in logged_steps(run.log)] == expected, logged_steps(run.log)
    assert len(logged_steps(first_start)) == step
    ranks = run.ranks()
    assert all(r["restart_count"] == 1 and r["global_step"] == STEPS for r in ranks)
    # each rank of the resumed run trained exactly the remaining steps
    assert all(len(r["samples"]) == (STEPS - step) * 4 for r in ranks), [len(r["samples"]) for r in ranks]
    ref = reference.ranks()
    assert {r["weights_sha256"] for r in ranks} == {ref[0]["weights_sha256"]}, "final weights differ"
    assert run.final_checkpoint().read_bytes() == reference.final_checkpoint().read_bytes()


# ------------------------------------------------------------------------------------------ tests


def test_single_node_two_process_job_completes(runs):
    run = runs["single"]
    assert_complete(run)
    assert f"log: {run.out}/slurm/slurm-{run.job_id}.out" in run.submit_stdout
    script = (run.out / "slurm" / "job.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in script and "#SBATCH --requeue" in script
    ranks = run.ranks()
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["args_world_size"] for r in ranks] == [2, 2]
    assert len({r["weights_sha256"] for r in ranks}) == 1
    assert len(logged_steps(run.log)) == STEPS
    assert run.info["Restarts"] == "0"


def test_preemption_checkpoints_requeues_and_resumes_to_identical_weights(runs):
    assert_preempted_and_equal(runs["preempt"], runs["single"], step=2)


def test_preempted_job_continues_the_same_wandb_run(runs):
    run = runs["preempt"]
    run_id = (run.out / "wandb_run_id").read_text().strip()
    dirs = sorted((run.out / "wandb").glob("offline-run-*"))
    assert len(dirs) == 2, dirs  # one per start of the job
    assert all(d.name.endswith("-" + run_id) for d in dirs), (run_id, dirs)


def test_two_node_job_ranks_rendezvous_and_train_together(runs):
    run = runs["preempt2"]
    assert_complete(run)
    assert "2 node(s) x 1 process(es)" in run.log
    ranks = run.ranks()  # what each rank did after the requeue: the last STEPS - 4 steps, all in epoch 1
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["args_world_size"] == 2 for r in ranks)
    assert {r["node"] for r in ranks} == {"n1", "n2"}, "one rank per Slurm node"
    shards = [{fp for e, fp in r["samples"] if e == 1} for r in ranks]
    assert not shards[0] & shards[1], "ranks saw the same samples"
    assert len(shards[0]) == len(shards[1]) == (STEPS - 4) * 4
    assert len({r["weights_sha256"] for r in ranks}) == 1, "ranks ended with different weights"


def test_two_node_preemption_resumes_to_the_weights_of_the_single_node_run(runs):
    # 2 nodes x 1 process, preempted and requeued, ends bit-identical to 1 node x 2 processes uninterrupted
    assert_preempted_and_equal(runs["preempt2"], runs["single"], step=4)


def test_unknown_partition_and_rejected_job_fail_clearly(slurm_cluster, tmp_path):
    bad = launch(RECIPE, "--launcher", "slurm", "--partition", "nope", f"output_dir={tmp_path}")
    assert bad.returncode == 2
    assert "partition 'nope' is unknown" in bad.stderr and "available: debug" in bad.stderr
    rejected = launch(RECIPE, "--launcher", "slurm", "--time", "soon", f"output_dir={tmp_path}")
    assert rejected.returncode == 2
    assert "sbatch rejected the job" in rejected.stderr and "time" in rejected.stderr.lower()


def test_sweep_submits_one_array_task_per_variant(slurm_cluster, tmp_path):
    result = launch(
        RECIPE,
        "--launcher",
        "slurm",
        f"output_dir={tmp_path}",
        "--sweep",
        "training.lr=1e-3",
        "--sweep",
        "training.lr=5e-4 training.epochs=1",
        "slurm.job_name=sweeptest",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job_id = re.search(r"submitted batch job (\d+) \(array of 2\)", result.stdout).group(1)
    try:
        script = (tmp_path / "slurm" / "sweep.sbatch").read_text()
        assert "#SBATCH --array=0-1" in script
        assert f"output_dir={tmp_path}/sweep-1" in script and "training.epochs=1" in script
        out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
        assert sorted(out.stdout.split()) == [f"{job_id}_0", f"{job_id}_1"], out.stdout
    finally:
        subprocess.run(["scancel", job_id])


def test_missing_slurm_is_a_clear_error(tmp_path):
    env = {"PATH": str(tmp_path)}  # no sbatch anywhere
    result = launch(RECIPE, "--launcher", "slurm", f"output_dir={tmp_path / 'run'}", env=env)
    assert result.returncode == 2
    assert "Slurm is not installed" in result.stderr and "slurm_test_cluster.sh" in result.stderr


def test_cluster_script_is_idempotent(slurm_cluster):
    again = subprocess.run(
        ["bash", str(CLUSTER), "start", str(slurm_cluster)], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr
    status = subprocess.run(
        ["bash", str(CLUSTER), "status", str(slurm_cluster)], capture_output=True, text=True, timeout=60
    )
    assert "slurmctld: running" in status.stdout and status.stdout.count("slurmd-n") == 2
    assert shutil.which("sbatch")
