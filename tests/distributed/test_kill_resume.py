"""A 2-rank run (torchrun DDP, and DeepSpeed ZeRO-2) SIGKILLed at an unplanned moment, then started again with
the same command, ends exactly where the uninterrupted run ends.

The command is `launch.py tests/distributed/tiny_recipe.py launch.launcher=torchrun launch.nproc=2
[launch.zero=2]` with a checkpoint every 2 steps; 3 epochs x 4 steps. (The launch settings are given as
overrides: torchrun's own parser rejects a `--nproc` among the script's arguments as an ambiguous
abbreviation of its `--nproc-per-node` / `--nproc_per_node`.) The kill takes every process of the run at once (the
launcher and both ranks, each torchrun worker sits in a session of its own), as a node failure would, after
a random step (not the last) at a random fraction of the next step's time: in a forward/backward pass, the
gradient all-reduce, an optimizer step, an evaluation or a checkpoint save, whatever comes. The choice comes
from a seeded RNG and the seed is printed; `KILL_SEED=<seed>` replays it. The `plateau` mode
(`tiny_plateau_recipe.py`, DDP) is killed just after its plateau stage opened instead: at a random fraction of
a step after the log says the gate opened (decided at the evaluation of step 8; its LR re-warms over 2 steps,
so the kill lands inside the ramp). Compared
bit for bit: final and best weights, the last checkpoint's weights and optimizer state (ZeRO-2: every rank's
partition), every logged loss / grad norm / learning rate / evaluation, `metrics.jsonl`, the summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch
from jobs import worker_env
from safetensors.torch import load_file

from conftest import ROOT

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(1200)]

RECIPE = "tests/distributed/tiny_recipe.py"
OVERRIDES = ("training.epochs=3", "training.save_steps=2", "training.resume=auto")
STEPS_PER_EPOCH, STEPS = 4, 12  # 32 samples / (2 ranks x batch 4), 3 epochs
MODES = {"ddp": (), "zero2": ("launch.zero=2",), "plateau": ()}
RECIPES = {"plateau": "tests/distributed/tiny_plateau_recipe.py"}  # the others run RECIPE
OPENED = {"plateau": "stage 1: unfroze"}  # killed just after this log line, not after a random step
TIMING_KEYS = ("runtime", "per_second", "epoch_seconds", "wall_seconds", "flos", "seconds")
SUMMARY_KEYS = (
    "global_steps",
    "epochs_completed",
    "train_loss",
    "best_metric",
    "best_epoch",
    "final_metrics",
    "best_metrics",
    "early_stopping",
    "stages_opened_at_step",
    "stages",
    "params",
    "examples",
    "world_size",
)


def command(mode: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "launch.py",
        RECIPES.get(mode, RECIPE),
        "--output-dir",
        str(out),
        "launch.launcher=torchrun",
        "launch.nproc=2",
        *MODES[mode],
        *OVERRIDES,
    ]


def kill_seed() -> int:
    seed = int(os.environ.get("KILL_SEED") or time.time_ns() % 2**32)
    print(f"\nkill/resume: KILL_SEED={seed}")
    return seed


class Run:
    """One start of the command in its own session, its output appended to `log`."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0
        with log.open("a") as sink:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=worker_env(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_for_step(self, step: int, timeout: float = 400) -> float:
        """Block until this start logged `step`; returns the time its last step took (the gap between lines)."""
        deadline, stamps = time.monotonic() + timeout, {}
        while step not in stamps:
            for s in logged_steps(self.log.read_text()[self.offset :]):
                stamps.setdefault(s, time.monotonic())
            if step in stamps:
                break
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"run ended (rc {self.proc.returncode}) before step {step}:\n"
                    f"{self.log.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"step {step} not reached in {timeout:.0f} s:\n{self.log.read_text()[-4000:]}"
                )
            time.sleep(0.005)
        times = sorted(stamps.values())
        return times[-1] - times[-2] if len(times) > 1 else 0.5

    def wait_for_text(self, text: str, timeout: float = 400) -> None:
        """Block until this start logged `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text()[self.offset :]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{text!r} not logged:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.005)

    def kill(self) -> int:
        """SIGKILL the launcher and every descendant (torchrun's workers run in sessions of their own)."""
        try:
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=30)  # reaped here, not by psutil (which would hide the status)
        psutil.wait_procs(tree[1:], timeout=30)
        return rc

    def finish(self, timeout: float = 600) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        assert rc == 0, self.log.read_text()[-6000:]


def survivors(out: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(out) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Callable[[str], dict]:
    """The reference run of a mode, run when a test first asks for it (`-k plateau` runs one mode only)."""
    root = tmp_path_factory.mktemp("kill_resume")
    runs: dict[str, dict] = {}

    def reference(mode: str) -> dict:
        if mode not in runs:
            out = root / f"{mode}-straight"
            Run(command(mode, out), root / f"{mode}-straight.log").finish()
            runs[mode] = {"out": out, "root": root}
        return runs[mode]

    return reference


def logged_steps(text: str) -> list[int]:
    """Global steps of rank 0's training-loss lines (logging_steps=1)."""
    return [
        round(float(e) * STEPS_PER_EPOCH) for e in re.findall(r"\{'loss': [^}]*'epoch': '([0-9.]+)'", text)
    ]


def untimed(record):
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(record, list):
        return [untimed(v) for v in record]
    return record


def last_checkpoint(out: Path) -> Path:
    complete = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "checkpoint.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]))


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a torch-saved file (optimizer state, DeepSpeed partitions), by its path in the tree."""
    found: dict[str, torch.Tensor] = {}

    def walk(obj, where: str) -> None:
        if torch.is_tensor(obj):
            found[where] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{where}/{k}")
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{where}/{i}")

    walk(torch.load(path, map_location="cpu", weights_only=False), "")
    return found


def assert_same_run(a: Path, b: Path) -> None:
    a_sum = json.loads((a / "training_summary.json").read_text())
    b_sum = json.loads((b / "training_summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert untimed(a_sum[key]) == untimed(b_sum[key]), key
    assert last_checkpoint(a).name == last_checkpoint(b).name
    for rel in ("best/model.safetensors", f"checkpoints/{last_checkpoint(a).name}/model.safetensors"):
        x, y = load_file(str(a / rel)), load_file(str(b / rel))
        assert x.keys() == y.keys(), rel
        different = [n for n in x if not torch.equal(x[n], y[n])]
        assert not different, f"{rel}: {len(different)} tensors differ, e.g. {different[:3]}"
    # optimizer state: optimizer.pt (DDP) or each rank's ZeRO partition under global_step*/
    state_files = sorted(p.relative_to(last_checkpoint(a)) for p in last_checkpoint(a).rglob("*.pt"))
    assert state_files == sorted(p.relative_to(last_checkpoint(b)) for p in last_checkpoint(b).rglob("*.pt"))
    assert any("optim" in str(p) for p in state_files), state_files
    for rel in state_files:
        x, y = tensors_of(last_checkpoint(a) / rel), tensors_of(last_checkpoint(b) / rel)
        assert x.keys() == y.keys(), rel
        assert all(torch.equal(x[k], y[k]) for k in x), rel
    a_hist = json.loads((last_checkpoint(a) / "trainer_state.json").read_text())["log_history"]
    b_hist = json.loads((last_checkpoint(b) / "trainer_state.json").read_text())["log_history"]
    assert untimed(a_hist) == untimed(b_hist)
    a_log = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    b_log = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert untimed(a_log) == untimed(b_log)


@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_of_a_two_rank_run_then_the_same_command_ends_bit_identical(uninterrupted, mode):
    reference = uninterrupted(mode)
    rng = random.Random(kill_seed())
    step, fraction = rng.randrange(1, STEPS - 1), rng.random()
    out = reference["root"] / f"{mode}-killed"
    log = reference["root"] / f"{mode}-killed.log"
    cmd = command(mode, out)
    run = Run(cmd, log)
    if mode in OPENED:  # a step's time from the first steps, then the opening
        delay = run.wait_for_step(2) * fraction
        run.wait_for_text(OPENED[mode])
        step = f"{OPENED[mode]!r}"
    else:
        delay = run.wait_for_step(step) * fraction
    time.sleep(delay)
    rc = run.kill()
    print(f"{mode}: SIGKILL {delay:.3f} s ({fraction:.2f} of a step) after step {step}, rc {rc}")
    assert not survivors(out), survivors(out)
    assert rc == -signal.SIGKILL and not (out / "training_summary.json").exists(), log.read_text()[-4000:]
    checkpoints = (
        sorted(p.name for p in (out / "checkpoints").glob("*")) if (out / "checkpoints").exists() else []
    )
    print(f"{mode}: left behind {checkpoints}")
    again = Run(cmd, log)
    again.finish()
    text = log.read_text()[again.offset :]
    resumed = re.search(r"resuming from \S+checkpoint-(\d+)", text)
    print(f"{mode}: restarted from {'step ' + resumed.group(1) if resumed else 'scratch'}")
    assert_same_run(reference["out"], out)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2
    if mode == "plateau":
        assert summary["stages_opened_at_step"] == {"0": STEPS_PER_EPOCH, "1": 2 * STEPS_PER_EPOCH}
