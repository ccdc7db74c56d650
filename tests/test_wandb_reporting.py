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


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_server(monkeypatch):
    """A server on 127.0.0.1 that answers every request (404): W&B's base URL points at it."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()


def test_auto_mode_is_online_only_when_logged_in(clean_env, local_server, monkeypatch, tmp_path):
    from trainers.reporting.wandb import logged_in

    assert configure_wandb(Reporting(), tmp_path / "a") == ["wandb"]
    assert os.environ["WANDB_MODE"] == "offline"
    del os.environ["WANDB_MODE"]
    monkeypatch.setenv("WANDB_API_KEY", "a1" * 20)
    configure_wandb(Reporting(), tmp_path / "b")
    assert os.environ["WANDB_MODE"] == "online"  # logged in, and the server answers
    del os.environ["WANDB_MODE"]
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.delenv("WANDB_BASE_URL")
    assert not logged_in()
    clean_env.write_text(f"machine api.wandb.ai\n  login user\n  password {'a1' * 20}\n")
    assert logged_in()  # a key in .netrc counts too
    assert configure_wandb(Reporting(wandb_mode="disabled"), tmp_path / "c") == []


@pytest.mark.parametrize("mode", ["auto", "online"])
def test_an_unreachable_server_means_offline_within_the_stated_time_and_one_line(
    mode, clean_env, monkeypatch, tmp_path, caplog
):
    """An API key (or online mode) and no route to W&B: offline at once, said in one line, instead of
    `wandb.init` waiting ~2 minutes and ending the run with CommError. `WANDB_MODE=` (empty) counts as unset."""
    import time

    from trainers.reporting.wandb import PROBE_TIMEOUT_S

    monkeypatch.setenv("WANDB_API_KEY", "a1" * 20)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_MODE", "")
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="trainers.reporting.wandb"):
        assert configure_wandb(Reporting(wandb_mode=mode), tmp_path / "run") == ["wandb"]
    assert time.monotonic() - start < PROBE_TIMEOUT_S == 10.0
    assert os.environ["WANDB_MODE"] == "offline"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "cannot be reached" in lines[0] and "logging offline instead" in lines[0]
    assert os.environ["WANDB_BASE_URL"] in lines[0] and "wandb sync" in lines[0]


def test_a_hanging_server_is_given_up_on_after_the_timeout(monkeypatch):
    """A server that accepts the connection and never answers: the probe stops at its timeout."""
    import socket
    import time

    from trainers.reporting.wandb import server_unreachable

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        start = time.monotonic()
        reason = server_unreachable(timeout=1.0)
        assert reason and 0.9 < time.monotonic() - start < 3.0, reason


def test_a_run_with_a_key_and_no_server_trains_offline(clean_env, tmp_path):
    """End to end: `auto` with an API key, W&B's base URL at a closed port, `WANDB_MODE=` empty: the run
    finishes (exit 0), logs offline under the output dir, and says so in one line."""
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="a1" * 20, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}", WANDB_MODE="")
    result = subprocess.run(
        [sys.executable, "launch.py", str(TINY), "reporting.wandb=true", f"output_dir={out}",
         "data.max_train_samples=16", "evaluation.num_beams=1", "training.epochs=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("logging offline instead") == 1, result.stderr[-3000:]
    assert sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))


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


def test_each_ablate_variant_gets_its_own_wandb_run_in_the_sweeps_group(clean_env, tmp_path):
    """`--ablate` trains its variants one after another in one process; W&B reads its environment once per
    process, so without a new session the second variant logged into the first one's run id and folder."""
    import subprocess
    import sys

    out = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            str(TINY),
            "--quiet",
            "--ablate",
            "training.lr=1e-3,1e-4",
            "reporting.wandb=true",
            f"output_dir={out}",
            "data.max_train_samples=16",
            "evaluation.num_beams=1",
            "training.epochs=1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = []
    for i in (0, 1):
        variant = out / f"sweep-{i}"
        run_id = (variant / "wandb_run_id").read_text().strip()
        files = sorted((variant / "wandb").glob("offline-run-*/run-*.wandb"))
        assert [f.name for f in files] == [f"run-{run_id}.wandb"], files
        runs.append(read_run(files[0]))
        assert runs[-1].run_id == run_id
        assert [r["train/global_step"] for r in runs[-1].history if "train/loss" in r] == [1, 2, 3, 4]
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].group == runs[1].group != ""
    assert [r.config["learning_rate"] for r in runs] == [1e-3, 1e-4]
