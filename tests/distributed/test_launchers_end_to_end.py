"""`launch.py` as users start it with 2 real ranks: it runs the launcher itself (`--launcher torchrun`,
`accelerate`, `deepspeed`), or runs in-process under `accelerate launch --config_file my.yaml`. Each rank
writes what it really did to `<output_dir>/ranks/rank<N>.json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.distributed

TINY_RECIPE = "tests/distributed/tiny_recipe.py"


def run(
    command: list[str], timeout: int = 600, wandb_home: Path | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """`wandb_home`: W&B on in its default mode (no API key, an empty .netrc there: offline)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    if wandb_home is not None:
        env.pop("WANDB_MODE")
        env.pop("WANDB_API_KEY", None)
        (wandb_home / ".netrc").write_text("")
        env["NETRC"] = str(wandb_home / ".netrc")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return result, time.time() - started


def rank_facts(out: Path, world: int = 2) -> list[dict]:
    return [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in range(world)]


def launched(result: subprocess.CompletedProcess) -> str:
    """The launcher command `launch.py --launcher` printed (and ran)."""
    return next(line for line in result.stdout.splitlines() if line.startswith("launching: "))


def assert_two_sharded_ranks(
    out: Path, deepspeed: bool, zero: int | None, batches: int, epochs: int, offload: bool = False
) -> None:
    """Both ranks trained, each on its half of every epoch, with the asked-for DeepSpeed stage (or none)."""
    for r, facts in enumerate(rank_facts(out)):
        assert (facts["rank"], facts["world_size"], facts["deepspeed"], facts["zero_stage"]) == (
            r,
            2,
            deepspeed,
            zero,
        )
        assert facts["zero_offload"] is (offload if deepspeed else None)  # the ZeRO optimizer's own flag
        assert facts["batches_per_epoch"] == facts["expected_batches_per_epoch"] == batches
        assert facts["optimizer_steps"] == epochs * batches
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_steps"] == epochs * batches


def test_torchrun_ddp_on_two_ranks_gets_every_launch_option(tmp_path):
    """`--launcher torchrun --nproc 2`, which died in torchrun's parser ("ambiguous option: --nproc could match
    --nproc-per-node"), with the options the workers must receive as overrides: output dir, W&B, rendezvous."""
    from trainers.launchers.commands import free_port

    out, port = tmp_path / "run", free_port()
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            TINY_RECIPE,
            "--launcher",
            "torchrun",
            "--nproc",
            "2",
            "--nnodes",
            "1",
            "--node-rank",
            "0",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--output-dir",
            str(out),
            "--no-wandb",
        ]
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    print(f"launch.py --launcher torchrun --nproc 2, tiny recipe: {seconds:.0f} s")
    assert "-m torch.distributed.run --nproc_per_node=2" in launched(
        result
    ) and f"--master_port={port}" in launched(result)
    assert f"results in {out}" in result.stdout  # --output-dir reached the workers
    assert_two_sharded_ranks(out, deepspeed=False, zero=None, batches=32 // (2 * 4), epochs=2)
    config = json.loads((out / "training_summary.json").read_text())["config"]
    assert config["launch"]["launcher"] == "torchrun" and config["launch"]["master_port"] == port
    assert config["reporting"]["wandb"] is False


def test_accelerate_ddp_on_two_ranks_with_one_offline_wandb_run(tmp_path):
    """`--launcher accelerate --nproc 2`: accelerate's --multi_gpu starts 2 real gloo ranks on CPU too. W&B on
    (not logged in: offline): one run for both ranks, with the recipe's group / job type / tags, every param
    group's LR, the trainable ratio and freeze map, resources, the stage opening and a prediction table."""
    from wandb_records import read_run

    out = tmp_path / "run"
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            TINY_RECIPE,
            "--launcher",
            "accelerate",
            "--nproc",
            "2",
            f"output_dir={out}",
            "reporting.wandb=true",
            "reporting.wandb_group=sweep-a",
            "reporting.wandb_job_type=finetune",
            "reporting.wandb_tags=tiny,ci",
        ],
        wandb_home=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    print(f"launch.py --launcher accelerate --nproc 2, tiny recipe, W&B offline: {seconds:.0f} s")
    assert "-m accelerate.commands.launch --multi_gpu --num_processes=2" in launched(result)
    assert_two_sharded_ranks(out, deepspeed=False, zero=None, batches=32 // (2 * 4), epochs=2)

    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files  # rank 0 only: not one run per rank
    w = read_run(files[0])
    assert w.run_id == (out / "wandb_run_id").read_text().strip()
    assert (w.group, w.job_type) == ("sweep-a", "finetune")
    assert {"tiny", "ci", "launcher:accelerate", "ddp"} <= set(w.tags)
    assert w.config["recipe"]["name"] == "tiny_dist"
    summary = json.loads((out / "training_summary.json").read_text())
    lrs = {k: v for row in w.history for k, v in row.items() if k.startswith("lr/")}
    assert {"lr/default/decay", "lr/vision/decay", "lr/vision/stage0/decay"} <= set(lrs)
    first = next(row for row in w.history if "lr/default/decay" in row)
    assert first["lr/vision/decay"] == pytest.approx(0.1 * first["lr/default/decay"])  # lr_mult 0.1
    assert all("train/global_step" in row for row in w.history if any(k.startswith("lr/") for k in row))
    ratio = summary["params"]["trainable_at_start"] / summary["params"]["total"]
    assert w.summary["params/trainable_ratio"] == pytest.approx(ratio)
    assert w.values("freeze_map/_type") == ["table-file"]
    assert w.values("stages/stage_0_opened_at_step") == [summary["stages_opened_at_step"]["0"]] == [4]
    peaks = w.values("resources/peak_memory_bytes")
    assert len(peaks) == 2 and all(p > 10 * 2**20 for p in peaks)  # one per epoch, RSS of a rank
    assert w.summary["resources/peak_memory_bytes"] == summary["resources"]["peak_memory"]["bytes"]
    assert len(summary["resources"]["peak_memory_per_rank"]) == 2
    assert [e["samples"] for e in summary["resources"]["epochs"]] == [32, 32]  # both ranks' shards
    assert w.values("resources/samples_per_second") and w.values("resources/tokens_per_second")
    tables = w.values("predictions/val/_type")
    assert tables == ["table-file"] * 3  # one per evaluation: before training and after each of 2 epochs
    table, staged = w.table("predictions/val")
    assert table["columns"] == ["image", "prediction", "target"] and len(table["data"]) == 8
    assert all(
        row[0]["_type"] == "image-file" and row[0]["path"] in staged and row[2] for row in table["data"]
    )
    assert Path(staged[table["data"][0][0]["path"]]).read_bytes()[:4] == b"\x89PNG"
    assert str(out) in staged[table["data"][0][0]["path"]]  # staged inside the run's output dir


def test_readme_torchrun_zero2_offload_on_two_ranks(tmp_path):
    """The README's `--launcher torchrun --zero 2 --offload --nproc 8` with `--demo` and 2 ranks on a small
    slice of the shapes set: ZeRO-2 with CPU optimizer offload under torchrun."""
    out = tmp_path / "run"
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            "recipes/blip_progressive.py",
            "--demo",
            "--launcher",
            "torchrun",
            "--zero",
            "2",
            "--offload",
            "--nproc",
            "2",
            "training.epochs=1",
            "data.max_train_samples=64",
            "data.max_val_samples=8",
            "evaluation.num_beams=1",
            "evaluation.max_length=12",
            "--no-wandb",
            f"output_dir={out}",
        ]
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    print(f"launch.py --demo --launcher torchrun --zero 2 --offload --nproc 2, 64 images: {seconds:.0f} s")
    assert "-m torch.distributed.run --nproc_per_node=2" in launched(result)
    assert "launch.zero=2 launch.offload=True" in launched(result)
    assert_two_sharded_ranks(out, deepspeed=True, zero=2, batches=64 // (2 * 16), epochs=1, offload=True)


@pytest.mark.slow
def test_demo_recipe_runs_under_deepspeed_zero2_on_two_ranks(tmp_path):
    """The issue's demo: `launch.py recipes/blip_progressive.py --demo --launcher deepspeed --zero 2 --nproc 2`
    (4 epochs of 64 images instead of 10 of 1280 to keep CI short; the first stage opens at epoch 3)."""
    out = tmp_path / "demo"
    result, seconds = run(
        [
            sys.executable,
            "launch.py",
            "recipes/blip_progressive.py",
            "--demo",
            "--launcher",
            "deepspeed",
            "--zero",
            "2",
            "--nproc",
            "2",
            "--no-wandb",
            "training.epochs=4",
            "data.max_train_samples=64",
            "data.max_val_samples=8",
            f"output_dir={out}",
        ],
        timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "launching: " in result.stdout and "deepspeed.launcher.runner" in result.stdout
    assert f"results in {out}" in result.stdout
    print(f"demo under deepspeed --zero 2 --nproc 2, 4 epochs x 64 images: {seconds:.0f} s")
    steps_per_epoch = 64 // (2 * 16)  # train samples / (ranks x batch 16)
    for r, facts in enumerate(rank_facts(out)):
        assert (facts["rank"], facts["world_size"], facts["deepspeed"], facts["zero_stage"]) == (
            r,
            2,
            True,
            2,
        )
        assert facts["zero_offload"] is False
        assert facts["batches_per_epoch"] == facts["expected_batches_per_epoch"] == steps_per_epoch
        assert facts["optimizer_steps"] == 4 * steps_per_epoch
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_steps"] == 4 * steps_per_epoch
    assert summary["stages_opened_at_step"] == {"0": 3 * steps_per_epoch}
    assert summary["best_metric"]["value"] is not None
    assert (out / "best" / "model.safetensors").is_file()
    assert len(json.loads(json.dumps(summary["examples"]))) > 0


def test_accelerate_config_file_with_deepspeed_runs_launch_py_in_process(tmp_path):
    """`accelerate launch --config_file my.yaml launch.py RECIPE` with `distributed_type: DEEPSPEED`, ZeRO-3:
    launch.py sees the launcher's environment and trains in-process; the yaml's stage reaches the Trainer."""
    from trainers.launchers.commands import free_port

    config = tmp_path / "my.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        compute_environment: LOCAL_MACHINE
        distributed_type: DEEPSPEED
        deepspeed_config:
          zero_stage: 3
          offload_optimizer_device: none
          offload_param_device: none
          zero3_init_flag: false
          zero3_save_16bit_model: true
        num_processes: 2
        num_machines: 1
        machine_rank: 0
        main_process_ip: 127.0.0.1
        main_process_port: {free_port()}
        mixed_precision: 'no'
        """)
    )
    out = tmp_path / "run"
    result, seconds = run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "launch.py",
            TINY_RECIPE,
            f"output_dir={out}",
        ]
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "launching: " not in result.stdout  # in-process: no second launcher
    print(f"accelerate (DEEPSPEED yaml, ZeRO-3) + launch.py, tiny recipe: {seconds:.0f} s")
    for r, facts in enumerate(rank_facts(out)):
        assert (facts["rank"], facts["world_size"], facts["deepspeed"], facts["zero_stage"]) == (
            r,
            2,
            True,
            3,
        )
        assert facts["zero_offload"] is False
        assert facts["batches_per_epoch"] == 32 // (2 * 4)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stages_opened_at_step"] == {"0": 4}
    from safetensors.torch import load_file

    weights = load_file(str(out / "best" / "model.safetensors"))  # gathered from the ZeRO-3 partitions
    assert all(t.numel() > 0 for t in weights.values())
    assert any(n.startswith("vision_model.embeddings") for n in weights)  # frozen tensors are saved too
