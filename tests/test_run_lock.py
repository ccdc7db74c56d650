"""The output-dir lock (`trainers.run_lock`): a live holder is named, a dead one's lock is taken over, a clean
release leaves no file. The whole-launch case is in tests/test_bad_inputs.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from trainers import run_lock

HOLD = "import sys, time; from pathlib import Path; from trainers import run_lock; run_lock.hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)"


def test_held_by_a_live_process_then_taken_over_from_a_dead_one(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for attempt in (run_lock.check_free, run_lock.hold):
            with pytest.raises(
                run_lock.OutputDirBusy, match=f"pid {holder.pid} on host {socket.gethostname()}"
            ):
                attempt(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_lock.check_free(tmp_path)  # the dead holder's file is there, unlocked
    run_lock.hold(tmp_path)
    try:
        assert f"taking over the lock left by pid {holder.pid}" in caplog.text
        child = subprocess.run(
            [sys.executable, "-c", HOLD.replace("time.sleep(600)", "pass"), str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert child.returncode == 1 and "in use by another run" in child.stderr  # this process holds it now
    finally:
        run_lock.release(tmp_path)
    assert not (tmp_path / run_lock.LOCK_FILE).exists()


def test_the_other_ranks_of_a_launch_do_not_trip_over_their_rank_0s_lock(tmp_path, monkeypatch):
    """Each worker of a launch runs the preflight; rank 0 may hold the lock by the time rank 1 gets there (seen
    on a loaded 2-core machine under Slurm): only rank 0 asks whether the dir is free, the lock is rank 0's."""
    from trainers.preflight import check_before_training
    from trainers.recipe import load_recipe

    monkeypatch.chdir(ROOT)
    recipe = load_recipe("recipes/vit_lora.py", [f"output_dir={tmp_path}"], demo=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("RANK", "1")
        assert check_before_training(recipe) is False  # nothing there yet: start afresh
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(run_lock.OutputDirBusy, match=f"pid {holder.pid}"):
            check_before_training(recipe)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
