"""Which rank died (`trainers.launchers.worker_watch`) and the line `launch.py` prints for it, with plain
processes standing in for a launcher's workers; the real 2-rank torchrun case is in
tests/distributed/test_launcher_bad_input.py."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT, tiny_recipe
from trainers.launch_outcome import rank_died_message
from trainers.launchers import worker_watch

WORKER = """
import os, signal, sys, time
from trainers.launchers import worker_watch
worker_watch.announce(sys.argv[1], {"RANK": sys.argv[2]})
if sys.argv[3] == "die":
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[3] == "error":
    worker_watch.ended(sys.argv[1], {"RANK": sys.argv[2]}, "RuntimeError")
    sys.exit(1)
time.sleep(30)
"""


def _workers(folder, roles):
    return [
        subprocess.Popen([sys.executable, "-c", WORKER, str(folder), str(rank), role], cwd=ROOT)
        for rank, role in enumerate(roles)
    ]


def test_the_first_rank_to_disappear_is_named_not_the_ones_stopped_after_it(tmp_path):
    watch = worker_watch.WorkerWatch()
    watch.start(tmp_path)
    procs = _workers(tmp_path, ["live", "die", "live"])
    procs[1].wait(timeout=60)
    time.sleep(0.3)  # the launcher notices, then stops the others
    for p in (procs[0], procs[2]):
        p.terminate()
        p.wait()
    watch.stop()
    death = watch.first_dead()
    assert death is not None and (death.rank, death.pid, death.how) == (1, procs[1].pid, None)
    message = rank_died_message(tiny_recipe(tmp_path / "out"), death, 1)
    assert message.startswith(f"rank 1 (pid {procs[1].pid} on ") and "died without a Python error" in message
    assert "No complete checkpoint was saved yet" in message and "starts over" in message


def test_a_rank_that_stopped_on_its_own_error_is_named_with_it(tmp_path):
    watch = worker_watch.WorkerWatch()
    watch.start(tmp_path)
    procs = _workers(tmp_path, ["error", "live"])
    procs[0].wait(timeout=60)
    procs[1].terminate()
    procs[1].wait()
    watch.stop()
    death = watch.first_dead()
    assert (death.rank, death.how) == (0, "RuntimeError")
    assert "stopped on RuntimeError (its traceback is above)" in rank_died_message(
        tiny_recipe(tmp_path / "out"), death, 1
    )
