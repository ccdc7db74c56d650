"""Preemption / time-limit handling under Slurm: checkpoint at a step boundary, then requeue the job.

Slurm sends SIGUSR1 some time before the limit (`--signal=B:USR1@120`; the batch script forwards it to
the trainers). The handler only sets a flag: the signal may arrive several times and on some ranks
earlier than on others. At every step end the ranks all-reduce the flag, so they all stop at the same
step. That step's checkpoint (`checkpoint-<global_step>`, model + optimizer + scheduler + RNG of every
rank + trainer state) is saved by the Trainer; once every rank has finished writing, rank 0 runs
`scontrol requeue $SLURM_JOB_ID`. Slurm kills the job and starts it again under the same id; the rerun
resumes from the latest checkpoint (`training.resume=auto`) and continues with the next step, so no
step is lost or done twice.

If the signal comes on the last step of an epoch, the epoch's own evaluation and save run first and
the requeue follows that save, so the resumed run does not skip the epoch's evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

REQUEUE_FAILED_EXIT = 75  # EX_TEMPFAIL: checkpoint saved, but the job could not requeue itself
_received = {"count": 0}


def _on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _received["count"] += 1


def signal_received() -> bool:
    """True once the preemption signal arrived in this process."""
    return _received["count"] > 0


def install_handler(signum: int = signal.SIGUSR1) -> None:
    """Idempotent: (re)install the flag-setting handler (main thread only)."""
    signal.signal(signum, _on_signal)


class SlurmPreemption(TrainerCallback):
    """Save at the next step boundary after SIGUSR1 and requeue the Slurm job (see module docstring)."""

    def __init__(
        self,
        output_dir: str | Path,
        job_id: str | None = None,
        requeue: bool = True,
        wait_for_kill_s: float = 300.0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.job_id = job_id or os.environ.get("SLURM_JOB_ID")
        self.requeue = requeue
        self.wait_for_kill_s = wait_for_kill_s
        self.stop_step: int | None = None
        install_handler()

    # ---- agreement between ranks
    def _agreed(self, args) -> bool:
        flag = 1 if signal_received() else 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = args.device if dist.get_backend() == "nccl" else torch.device("cpu")
            t = torch.tensor([flag], dtype=torch.int32, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return flag > 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_step is not None or not self._agreed(args):
            return control
        if state.max_steps and state.global_step >= state.max_steps:
            return control  # the run finishes (and saves) now anyway
        self.stop_step = state.global_step
        logger.warning(
            "preemption signal: checkpointing at step %d, then requeueing Slurm job %s",
            state.global_step,
            self.job_id,
        )
        end_of_epoch = state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-9
        if not end_of_epoch:
            # Mid-epoch: save this step now. At an epoch's end the epoch's evaluation and save come next.
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stop_step is None:
            return control
        _barrier()  # every rank has written its part of the checkpoint
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        ok = True
        if state.is_world_process_zero:
            self._record(state.global_step, checkpoint)
            _finish_wandb()
            ok = self._requeue() if self.requeue else False
        ok = _broadcast_flag(ok)
        if not ok:
            logger.error(
                "checkpoint %s saved but the job was not requeued: resubmit the same command to "
                "resume from it",
                checkpoint,
            )
            raise SystemExit(REQUEUE_FAILED_EXIT)
        # Slurm is killing the job (SIGTERM to every process): do nothing more, not even another step.
        deadline = time.monotonic() + self.wait_for_kill_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
        logger.error(
            "job %s was requeued but not stopped within %.0f s; exiting", self.job_id, self.wait_for_kill_s
        )
        os._exit(REQUEUE_FAILED_EXIT)

    def _record(self, step: int, checkpoint: Path) -> None:
        record = {
            "job_id": self.job_id,
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "step": step,
            "checkpoint": str(checkpoint),
            "signals": _received["count"],
            "time": time.time(),
        }
        with open(self.output_dir / "preemptions.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _requeue(self) -> bool:
        cmd = ["scontrol", "requeue", str(self.job_id)]
        logger.warning("requeueing: %s", " ".join(cmd))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.error("%s failed: %s", " ".join(cmd), exc)
            return False
        if result.returncode != 0:
            logger.error("%s failed (exit %d): %s", " ".join(cmd), result.returncode, result.stderr.strip())
            return False
        return True


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _broadcast_flag(value: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if value else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _finish_wandb() -> None:
    """Close the W&B run cleanly; the requeued job resumes it under the id kept in the output dir."""
    from trainers.reporting.wandb import active_wandb

    wandb = active_wandb()
    if wandb is not None:
        try:
            wandb.run.mark_preempting()
            wandb.finish()
        except Exception as exc:  # never let reporting block the requeue
            logger.warning("W&B finish before requeue failed: %s", exc)
