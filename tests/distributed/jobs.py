"""The shared launches of the distributed suites: every run of test_rank_invariance, test_ragged_captions and
test_uneven_eval goes into one 1-process job, one 2-rank torchrun job and one 2-rank `accelerate launch` job.

A launch costs ~10 s of imports per process before it trains a step, so the suites' runs share launches:
each job runs its runs back to back (tests/distributed/worker.py `--runs`), each run with its own data,
schedule and folder (`<job>/<run name>/facts.rank<N>.json`). The three jobs start together.

The runs, per suite (global batch 8 everywhere: 1 x 8, or 2 x 4):
- rank invariance: 32 training captions of one token count, 8 of them for validation, 5 epochs, early stopping
  with patience 2; the 1-process reference `ddp`, and under torchrun DDP, ZeRO-1/2/3, ZeRO-2/3 with CPU offload,
  two gradient-accumulation modes and an interrupted+resumed ZeRO-3 (logging every 3 steps, resumed inside a
  logging window); accelerate: DDP; and with a plateau stage opening mid-run (`+plateau`): 1 process and 2 ranks
  under DDP, ZeRO-2 and ZeRO-3;
- ragged captions: 32 captions cut to 3..8 words, 3 epochs, no early stop; 1 process x 8 and 4 x 2
  accumulation; 2 ranks DDP, DDP with accumulation, ZeRO-2;
- uneven evaluation: 7 validation images, eval batch 2, 2 epochs; 1 process; 2 ranks DDP and ZeRO-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "data" / "shapes"
WORKER = ROOT / "tests" / "distributed" / "worker.py"
WORLD, GLOBAL_BATCH, SAMPLES = 2, 8, 32
STEPS_PER_EPOCH = SAMPLES // GLOBAL_BATCH  # = N / (world x per-rank batch x accum) = 32 / (2 x 4 x 1)

# rank invariance
EPOCHS, PATIENCE, VAL_SAMPLES = 5, 2, 8
TORCHRUN_MODES = ("ddp", "zero1", "zero2", "zero3", "zero2_offload", "zero3_offload")
RESUME_MODE = "zero3+resume"
# The resumed run logs every 3 steps and resumes from checkpoint-8, inside the window 7..9: its logged losses
# must be the means of the uninterrupted run's per-step losses over the same windows.
RESUME_LOGGING_STEPS = 3
ACCUM_MODES = ("ddp+accum2", "zero2+accum2")  # 2 ranks x batch 2 x 2 accumulation steps
PLATEAU_MODES = ("ddp+plateau", "zero2+plateau", "zero3+plateau")  # the 1-process reference: ddp+plateau
# ragged captions
RAGGED_EPOCHS = 3
RAGGED_ONE_PROCESS = ("ddp", "ddp+accum2")
RAGGED_TWO_RANKS = ("ddp", "ddp+accum2", "zero2")
# uneven evaluation
UNEVEN_VAL, UNEVEN_EVAL_BATCH, UNEVEN_EPOCHS = 7, 2, 2
UNEVEN_MODES = ("ddp", "zero3")


def free_port() -> int:
    from trainers.launchers.commands import free_port as pick

    return pick()


def worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")),
    }


def run_jobs(jobs: dict[Path, list[str]], timeout: int = 1500) -> None:
    """Run the commands side by side, each to completion, its output in `<out>/job.log` (the limit only
    catches a hang: the jobs take a few minutes together on 2 idle cores)."""
    started = {}
    for out, command in jobs.items():
        out.mkdir(parents=True, exist_ok=True)
        log = (out / "job.log").open("w")
        started[out] = (
            command,
            log,
            subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=worker_env()
            ),
        )
    failed = []
    for out, (command, log, proc) in started.items():
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        if rc != 0:
            failed.append(f"{' '.join(command)} (exit {rc})\n{(out / 'job.log').read_text()[-6000:]}")
    assert not failed, "\n\n".join(failed)


def run_job(command: list[str], out: Path, timeout: int = 1500) -> None:
    run_jobs({out: command}, timeout)


def facts(out: Path, run: str, world: int) -> list[dict]:
    return [json.loads((out / run / f"facts.rank{r}.json").read_text()) for r in range(world)]


def same_length_captions(source: Path, target: Path, count: int) -> Path:
    """Shapes captions of 7 words (9 tokens with [DEC] and [SEP]): equal token counts in every batch, so a
    mean over a rank's batch averaged over ranks is the mean over the global batch (train and eval loss)."""
    captions = json.loads(source.read_text())
    same_length = {k: v for k, v in captions.items() if len(v.split()) == 7}
    target.write_text(json.dumps(dict(list(same_length.items())[:count])))
    return target


def ragged_captions(source: Path, target: Path, count: int) -> Path:
    """The first `count` shipped captions cut to 3..8 words in turn: every batch mixes lengths."""
    captions = json.loads(source.read_text())
    ragged = {
        name: " ".join(text.split()[: 3 + i % 6])
        for i, (name, text) in enumerate(list(captions.items())[:count])
    }
    target.write_text(json.dumps(ragged))
    return target


def first_captions(source: Path, target: Path, count: int) -> Path:
    target.write_text(json.dumps(dict(list(json.loads(source.read_text()).items())[:count])))
    return target


@dataclass(frozen=True)
class SharedJobs:
    """Where each job wrote its runs, and the data files they trained on."""

    one_process: Path
    torchrun: Path
    accelerate: Path
    data: dict[str, Path]


def write_data(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "train": same_length_captions(SHAPES / "train.json", root / "train_same_length.json", SAMPLES),
        "val": same_length_captions(SHAPES / "val.json", root / "val_same_length.json", VAL_SAMPLES),
        "ragged_train": ragged_captions(SHAPES / "train.json", root / "ragged_train.json", SAMPLES),
        "ragged_val": ragged_captions(SHAPES / "val.json", root / "ragged_val.json", 8),
        "val7": first_captions(SHAPES / "val.json", root / "val7.json", UNEVEN_VAL),
    }


def _run(name: str, mode: str, train: Path, val: Path, epochs: int, patience: int, **extra) -> dict:
    return {
        "name": name,
        "mode": mode,
        "train_json": str(train),
        "val_json": str(val),
        "epochs": epochs,
        "patience": patience,
        "global_batch": GLOBAL_BATCH,
        **extra,
    }


def runs(data: dict[str, Path]) -> dict[str, list[dict]]:
    """The runs of each job: rank invariance keeps the mode as its name; the others carry their suite's prefix."""
    rank = dict(
        train=data["train"], val=data["val"], epochs=EPOCHS, patience=PATIENCE, stop_at=2 * STEPS_PER_EPOCH
    )
    ragged = dict(train=data["ragged_train"], val=data["ragged_val"], epochs=RAGGED_EPOCHS, patience=10)
    uneven = dict(
        train=data["train"], val=data["val7"], epochs=UNEVEN_EPOCHS, patience=10, eval_batch=UNEVEN_EVAL_BATCH
    )
    return {
        "one_process": [
            _run("ddp", "ddp", **rank),
            _run("ddp+plateau", "ddp+plateau", **rank),
            *(_run(f"ragged-{m}", m, **ragged) for m in RAGGED_ONE_PROCESS),
            _run("uneven-ddp", "ddp", **uneven),
        ],
        "torchrun": [
            *(_run(m, m, **rank) for m in (*TORCHRUN_MODES, *ACCUM_MODES, *PLATEAU_MODES)),
            _run(RESUME_MODE, RESUME_MODE, **rank, logging_steps=RESUME_LOGGING_STEPS),
            *(_run(f"ragged-{m}", m, **ragged) for m in RAGGED_TWO_RANKS),
            *(_run(f"uneven-{m}", m, **uneven) for m in UNEVEN_MODES),
        ],
        "accelerate": [_run("ddp", "ddp", **rank)],
    }


def accelerate_config(path: Path) -> Path:
    """`accelerate launch --config_file` with a multi-process yaml (MULTI_GPU: gloo ranks on CPU)."""
    path.write_text(
        textwrap.dedent(f"""\
        compute_environment: LOCAL_MACHINE
        distributed_type: MULTI_GPU
        num_processes: {WORLD}
        num_machines: 1
        machine_rank: 0
        main_process_ip: 127.0.0.1
        main_process_port: {free_port()}
        mixed_precision: 'no'
        """)
    )
    return path


def run_shared_jobs(root: Path) -> SharedJobs:
    """Write the data and the run lists, then run the three jobs side by side."""
    data = write_data(root / "data")
    jobs = SharedJobs(root / "one_process", root / "torchrun", root / "accelerate", data)
    commands = {
        jobs.one_process: [sys.executable],
        jobs.torchrun: [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={WORLD}",
            f"--master_port={free_port()}",
        ],
        jobs.accelerate: [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(accelerate_config(root / "accelerate_ddp.yaml")),
        ],
    }
    for (name, job_runs), out in zip(runs(data).items(), commands, strict=True):
        out.mkdir(parents=True, exist_ok=True)
        (out / "runs.json").write_text(json.dumps(job_runs, indent=1))
        commands[out] = [*commands[out], str(WORKER), "--out", str(out), "--runs", str(out / "runs.json")]
        assert out.name == name
    run_jobs(commands)
    return jobs
