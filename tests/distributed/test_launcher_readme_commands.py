"""The README's commands that start `launch.py` under a launcher of the user's own, run as written on a fresh
clone (the recipe's data/captions/ is not shipped; an empty Hugging Face home): the data error, checked before any
model is loaded or downloaded, is our paragraph, and what the launcher adds after it and the exit status are the
launcher's, as the README says.

The README commands that `launch.py` launches itself are in tests/test_cli.py (as written, real recipe) and
tests/distributed/test_launchers_end_to_end.py (`--demo`, 2 ranks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.distributed

RECIPE = "recipes/blip_progressive.py"
DATA_MISSING = "Data not found"  # followed by the key and path, the expected layout and the `--demo` hint
OUR_FRAME = re.compile(
    rf'File "(?:{re.escape(str(ROOT))}|{re.escape(str(ROOT.resolve()))})/(?:launch\.py|trainers/)'
)
BIN = Path(sys.executable).parent  # the venv's `accelerate` and `deepspeed` scripts


def run_as_written(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "HF_HUB_CACHE")
    }
    env.update(
        HF_HOME=str(tmp_path / "hf"),
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


def ours(stderr: str) -> list[str]:
    """Our paragraphs (one per failing rank under a user's launcher); never a traceback frame of our code."""
    assert not OUR_FRAME.search(stderr), stderr[-6000:]
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_accelerate_launch_single_process_as_written(tmp_path):
    """`accelerate launch launch.py recipes/blip_progressive.py`: our paragraph, then accelerate's own
    CalledProcessError traceback (which names our exit status 2), and accelerate's exit status 1. From
    accelerate 1.16 the traceback is chained to a `RuntimeError` that repeats the paragraph."""
    from importlib.metadata import version

    result = run_as_written(["accelerate", "launch", "launch.py", RECIPE], tmp_path)
    assert result.returncode == 1, result.stderr[-4000:]
    [message] = ours(result.stderr)
    assert DATA_MISSING in message and "data/captions/train.json" in message and "--demo" in message
    after = result.stderr.split(message, 1)[1].strip()
    repeats = tuple(int(part) for part in version("accelerate").split(".")[:2]) >= (1, 16)
    assert after.startswith(f"RuntimeError: {message}\n" if repeats else "Traceback"), after[:400]
    assert after.splitlines()[-1].startswith("subprocess.CalledProcessError")
    assert "returned non-zero exit status 2" in after.splitlines()[-1]


def test_accelerate_launch_quiet_leaves_our_paragraph_last(tmp_path):
    """The README's advice: `accelerate launch -q` drops accelerate's traceback, our paragraph is the last line."""
    result = run_as_written(["accelerate", "launch", "-q", "launch.py", RECIPE, "training.epoch=3"], tmp_path)
    assert result.returncode == 1, result.stderr[-4000:]
    [message] = ours(result.stderr)
    assert "Did you mean: training.epochs" in message
    assert result.stderr.strip().splitlines()[-1] == message and "Traceback" not in result.stderr


def test_accelerate_launch_with_your_yaml_as_written(tmp_path):
    """`accelerate launch --config_file my.yaml launch.py recipes/blip_progressive.py` with a 2-process yaml:
    each rank that fails prints our paragraph, then torch's ChildFailedError report; exit status 1."""
    from trainers.launchers.commands import free_port

    (tmp_path / "my.yaml").write_text(
        textwrap.dedent(f"""\
        compute_environment: LOCAL_MACHINE
        distributed_type: MULTI_GPU
        num_processes: 2
        num_machines: 1
        machine_rank: 0
        main_process_ip: 127.0.0.1
        main_process_port: {free_port()}
        mixed_precision: 'no'
        """)
    )
    result = run_as_written(
        ["accelerate", "launch", "--config_file", str(tmp_path / "my.yaml"), "launch.py", RECIPE], tmp_path
    )
    assert result.returncode == 1, result.stderr[-4000:]
    messages = ours(result.stderr)
    assert 1 <= len(messages) <= 2 and all(
        DATA_MISSING in m and "data/captions/train.json" in m for m in messages
    )
    assert "ChildFailedError" in result.stderr.split(messages[-1], 1)[1]


def test_deepspeed_with_your_config_as_written(tmp_path):
    """`deepspeed launch.py recipes/blip_progressive.py --deepspeed ds_configs/zero2.json`: deepspeed passes the
    worker's exit status 2 on and reports it on stdout; our paragraph is the last thing on stderr."""
    result = run_as_written(
        ["deepspeed", "launch.py", RECIPE, "--deepspeed", "ds_configs/zero2.json"], tmp_path
    )
    assert result.returncode == 2, result.stderr[-4000:]
    messages = ours(result.stderr)
    assert messages and all(DATA_MISSING in m and "data/captions/train.json" in m for m in messages)
    assert result.stderr.strip().splitlines()[-1] == messages[-1] and "Traceback" not in result.stderr
    assert "exits with return code = 2" in result.stdout
