"""Launcher commands, DeepSpeed config resolution/validation and the world checks, without starting ranks."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from conftest import ROOT
from trainers.distributed import WorldGuard, WorldMismatchError, check_world, expected_batches_per_rank
from trainers.errors import RecipeError
from trainers.launchers.commands import (
    WORKER_ERRORS_ENV,
    build_launch_command,
    inside_launcher,
    peer_stopped_on_user_error,
    relay_worker_error,
    run_launcher,
)
from trainers.launchers.deepspeed_config import (
    DS_CONFIG_DIR,
    ZERO_KEYS,
    DeepSpeedConfigError,
    deepspeed_config_from_accelerate_env,
    resolve_deepspeed_config,
    shipped_config,
    validate_deepspeed_config,
)
from trainers.recipe import Training
from trainers.recipe.config import Launch

RECIPE = "recipes/blip_progressive.py"


def launch(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )


# ------------------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3", "zero2_offload", "zero3_offload"])
def test_shipped_configs_are_valid_and_leave_batch_values_to_the_trainer(name):
    config = validate_deepspeed_config(DS_CONFIG_DIR / f"{name}.json", Training(batch_size=4), world_size=2)
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert config[key] == "auto"
    assert "optimizer" not in config and "scheduler" not in config  # the Trainer's groups reach ZeRO
    zero = config["zero_optimization"]
    assert zero["stage"] == int(name[4])
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # best/ gets full weights


def test_zero_keys_match_deepspeed():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    fields = DeepSpeedZeroConfig.model_fields
    names = set(fields) | {f.alias for f in fields.values() if f.alias}
    assert names <= ZERO_KEYS, sorted(names - ZERO_KEYS)


@pytest.mark.parametrize(
    ("zero", "offload", "name"),
    [(1, False, "zero1.json"), (2, False, "zero2.json"), (3, True, "zero3_offload.json")],
)
def test_zero_flag_resolves_to_a_shipped_file(zero, offload, name):
    assert shipped_config(zero, offload).name == name
    assert resolve_deepspeed_config(Launch(launcher="deepspeed", zero=zero, offload=offload)).endswith(name)


def test_accelerate_deepspeed_env_becomes_a_config():
    env = {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
        "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "none",
        "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "none",
    }
    assert deepspeed_config_from_accelerate_env(env).endswith("zero3.json")
    env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] = "cpu"
    assert deepspeed_config_from_accelerate_env(env).endswith("zero3_offload.json")
    assert deepspeed_config_from_accelerate_env({"ACCELERATE_DEEPSPEED_CONFIG_FILE": "x.json"}) is None


# ---------------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"zero_optimisation": {"stage": 2}},
            "unknown key 'zero_optimisation' (did you mean zero_optimization?)",
        ),
        ({"gradient_clip": 1.0}, "did you mean gradient_clipping"),
        ({"zero_optimization": {"stage": 2, "overlap_com": True}}, "zero_optimization.overlap_comm"),
        ({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}, "with stage 1"),
        ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, "only stage 3"),
        ({"zero_optimization": {"stage": 4}}, "must be 0, 1, 2 or 3"),
        ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "both true"),
        ({"zero_optimization": {"stage": 2, "offload_param": "cpu"}}, "offload_param must be an object"),
        ({"train_micro_batch_size_per_gpu": 16}, "recipe gives 4 (training.batch_size)"),
        (
            {"train_batch_size": 64},
            "recipe gives 8 (training.batch_size x training.grad_accum x 2 processes)",
        ),
    ],
)
def test_invalid_configs_get_a_clear_error(config, expected):
    with pytest.raises(DeepSpeedConfigError) as info:
        validate_deepspeed_config(config, Training(batch_size=4), world_size=2)
    assert expected in str(info.value)
    assert isinstance(info.value, RecipeError)


def test_optimizer_sections_are_refused_only_beside_param_groups_or_stages():
    """Hugging Face's example configs carry optimizer / scheduler sections: accepted for a recipe without
    param_groups and stages (DeepSpeed's optimizer then builds one group), refused with them, naming both."""
    config = json.loads((DS_CONFIG_DIR / "zero2.json").read_text())
    config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}}
    config["scheduler"] = {"type": "WarmupLR", "params": {"warmup_max_lr": "auto"}}
    training = Training(batch_size=4)
    assert validate_deepspeed_config(config, training, 2, (), (), "fp32") == config
    with pytest.raises(DeepSpeedConfigError) as info:
        validate_deepspeed_config(config, training, 2, ("g",), ("s", "t"), "fp32")
    assert "'optimizer' and 'scheduler' sections" in str(info.value)
    assert "1 param_groups and 2 unfreezing stages" in str(info.value)


def test_deepspeed_judges_the_filled_config():
    """What the Trainer fills and DeepSpeed's own classes then reject, with the key (pydantic's location)."""
    base = json.loads((DS_CONFIG_DIR / "zero3.json").read_text())
    bad = {**base, "zero_optimization": {**base["zero_optimization"], "stage3_max_live_parameters": "many"}}
    with pytest.raises(DeepSpeedConfigError, match="zero_optimization.stage3_max_live_parameters='many'"):
        validate_deepspeed_config(bad, Training(batch_size=4), 2, precision="fp32")
    pinned = {**base, "optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}
    with pytest.raises(RecipeError, match=r"optimizer.params.lr=0.1 but the run uses 5e-05 \(training.lr\)"):
        validate_deepspeed_config(pinned, Training(batch_size=4, lr=5e-5), 2, precision="fp32")


def test_offload_with_stage_one_or_without_zero_is_refused():
    with pytest.raises(DeepSpeedConfigError, match="needs --zero 2 or 3"):
        shipped_config(1, offload=True)
    with pytest.raises(
        DeepSpeedConfigError, match=r"--offload \(launch.offload\) picks a shipped ZeRO config"
    ):
        resolve_deepspeed_config(Launch(launcher="deepspeed", offload=True))


def test_bad_deepspeed_config_fails_before_launch_without_traceback(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(
        json.dumps(
            {"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}, "train_batch_sz": 8}
        )
    )
    result = launch(
        RECIPE, "--demo", "--launcher", "deepspeed", "--nproc", "2", "--deepspeed", str(bad), "--dry-run"
    )
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert "train_batch_size" in result.stderr and "with stage 1" in result.stderr
    result = launch(RECIPE, "--demo", "--launcher", "deepspeed", "--zero", "1", "--offload", "--dry-run")
    assert result.returncode == 2 and "needs --zero 2 or 3" in result.stderr


# ------------------------------------------------------------------------------------------- commands


def test_commands_per_launcher_pass_multi_node_arguments_through():
    args = ["recipes/x.py", "--zero", "2"]
    nodes = dict(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29601)
    torchrun = build_launch_command(Launch(launcher="torchrun", **nodes), "launch.py", args)
    assert torchrun[1:3] == ["-m", "torch.distributed.run"]
    for flag in (
        "--nproc_per_node=8",
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=10.0.0.1",
        "--master_port=29601",
    ):
        assert flag in torchrun
    assert torchrun[-4:] == ["launch.py", *args]

    acc = build_launch_command(Launch(launcher="accelerate", zero=2, **nodes), "launch.py", args)
    for flag in (
        "--use_deepspeed",
        "--num_processes=16",
        "--num_machines=2",
        "--machine_rank=1",
        "--main_process_ip=10.0.0.1",
        "--main_process_port=29601",
    ):
        assert flag in acc
    assert any(a.startswith("--deepspeed_config_file=") and a.endswith("zero2.json") for a in acc)
    ddp = build_launch_command(Launch(launcher="accelerate", nproc=2), "launch.py", [])
    assert "--multi_gpu" in ddp and "--use_deepspeed" not in ddp  # --multi_gpu: real gloo ranks on CPU too

    ds = build_launch_command(Launch(launcher="deepspeed", zero=3, **nodes), "launch.py", args)
    assert ds[1:3] == ["-m", "deepspeed.launcher.runner"]
    for flag in (
        "--num_gpus=8",
        "--num_nodes=2",
        "--no_ssh",
        "--node_rank=1",
        "--master_addr=10.0.0.1",
        "--master_port=29601",
    ):
        assert flag in ds


def test_single_node_picks_a_free_port_unless_given():
    cmd = build_launch_command(Launch(launcher="torchrun", nproc=2), "launch.py", [])
    port = int(next(a for a in cmd if a.startswith("--master_port=")).split("=")[1])
    assert 0 < port < 65536
    cmd = build_launch_command(Launch(launcher="torchrun", nproc=2, nnodes=2, node_rank=0), "launch.py", [])
    assert "--master_port=29500" in cmd  # every node must agree on it


@pytest.mark.parametrize(
    ("launch_settings", "expected"),
    [
        (Launch(nproc=2), "need a launcher"),
        (Launch(zero=2), r"DeepSpeed \(--zero / --deepspeed\) needs a launcher"),
        (Launch(launcher="torchrun", nnodes=2, node_rank=2), "--node-rank must be in"),
    ],
)
def test_contradictory_launch_settings_are_refused(launch_settings, expected):
    with pytest.raises(RecipeError, match=expected):
        build_launch_command(launch_settings, "launch.py", [])


def test_dry_run_shows_the_deepspeed_command():
    result = launch(
        RECIPE,
        "--demo",
        "--dry-run",
        "--launcher",
        "deepspeed",
        "--zero",
        "2",
        "--nproc",
        "2",
        "--master-port",
        "29611",
    )
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("launcher:"))
    assert "deepspeed.launcher.runner --num_gpus=2 --num_nodes=1" in line and "--master_port=29611" in line
    assert line.rstrip().endswith(
        f"launch.py {RECIPE} --demo launch.launcher=deepspeed launch.nproc=2 "
        "launch.master_port=29611 launch.zero=2"
    )


def _launch_cli():
    spec = importlib.util.spec_from_file_location("launch_cli", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launcher_parsers() -> dict[str, Callable[[list[str]], tuple[str, list[str]]]]:
    """Each launcher's own argv parser -> (script, script arguments) as that launcher understands them."""
    from accelerate.commands.launch import launch_command_parser
    from deepspeed.launcher import runner
    from torch.distributed.run import get_args_parser

    def torchrun(argv):
        a = get_args_parser().parse_args(argv)
        return a.training_script, a.training_script_args

    def accelerate(argv):
        a = launch_command_parser().parse_args(argv)
        return a.training_script, a.training_script_args

    def deepspeed(argv):
        a = runner.parse_args(argv)
        return a.user_script, a.user_args

    return {"torchrun": torchrun, "accelerate": accelerate, "deepspeed": deepspeed}


EVERY_OPTION = [
    RECIPE,
    "training.lr=1e-4",
    "--demo",
    "--nproc",
    "2",
    "--nnodes",
    "2",
    "--node-rank",
    "1",
    "--master-addr",
    "10.0.0.1",
    "--master-port",
    "29601",
    "--zero",
    "2",
    "--offload",
    "--no-wandb",
    "--output-dir",
    "/tmp/run",
]


@pytest.mark.parametrize("name", ["torchrun", "accelerate", "deepspeed"])
def test_each_launcher_hands_the_worker_arguments_to_the_script_untouched(name):
    """argparse resolves abbreviated options across the whole argv, even after the script name: the launcher
    must see nothing it could take for its own option (the README's `--launcher torchrun --nproc 2` died with
    "ambiguous option: --nproc could match --nproc-per-node"). The workers then resolve the same recipe."""
    cli = _launch_cli()
    parse = launcher_parsers()[name]
    args = cli.build_parser().parse_intermixed_args(["--launcher", name, *EVERY_OPTION])
    workers = cli.worker_args(args)
    assert not [a for a in workers if a.startswith("-") and a != "--demo"]  # the rest are key=value overrides
    command = build_launch_command(
        Launch(launcher=name, nproc=2, nnodes=2, node_rank=1, zero=2, offload=True), "launch.py", workers
    )
    assert parse(command[3:]) == ("launch.py", workers)
    again = cli.build_parser().parse_intermixed_args(workers)  # what a worker's launch.py makes of them
    assert again.demo and [*again.overrides, *cli.cli_overrides(again)] == [
        *args.overrides,
        *cli.cli_overrides(args),
    ]


def test_forwarding_the_command_line_as_typed_breaks_torchrun():
    """Why the workers get overrides: torchrun's parser refuses the typed `--nproc 2` after the script."""
    with pytest.raises(SystemExit):
        launcher_parsers()["torchrun"](
            ["--nproc_per_node=2", "launch.py", RECIPE, "--launcher", "torchrun", "--nproc", "2"]
        )


def test_run_launcher_collects_each_distinct_worker_error_once():
    """Workers of `launch.py --launcher` leave their paragraph to the parent, which prints it once, last."""
    worker = (
        "import os, sys; from trainers.launchers.commands import relay_worker_error\n"
        "for rank in ('1', '0', '2'):\n"
        "    os.environ.update(RANK=rank, WORLD_SIZE='3')\n"
        "    assert relay_worker_error('rank 2 saw another problem' if rank == '2' else 'bad data')\n"
        "sys.exit(1)"
    )
    assert run_launcher([sys.executable, "-c", worker]) == (1, ["bad data", "rank 2 saw another problem"])
    assert run_launcher([sys.executable, "-c", "import sys; sys.exit(3)"]) == (3, [])
    assert not relay_worker_error(
        "no parent", {"RANK": "0", "WORLD_SIZE": "1"}
    )  # the worker prints it itself


def test_a_rank_whose_peer_stopped_on_bad_input_knows_it(tmp_path):
    """Its broken collective ("Connection closed by peer") is a consequence: launch.py logs one line, no traceback."""
    env = {WORKER_ERRORS_ENV: str(tmp_path), "RANK": "1", "WORLD_SIZE": "2"}
    (tmp_path / "rank000001.txt").write_text("its own error does not count")
    assert not peer_stopped_on_user_error(env, wait_s=0.2)
    (tmp_path / "rank000000.txt").write_text("bad data")
    assert peer_stopped_on_user_error(env, wait_s=0.2)
    assert not peer_stopped_on_user_error({"RANK": "1", "WORLD_SIZE": "2"}, wait_s=0.2)  # no launch.py parent


def test_launch_py_forwards_sigterm_to_its_launcher(tmp_path):
    """`kill PID` of launch.py stops the launcher too (no orphaned workers); the status says which signal."""
    started = tmp_path / "started"
    launcher = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(120)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from trainers.launchers.commands import run_launcher; "
            f"sys.exit(run_launcher([sys.executable, '-c', {launcher!r}])[0])",
        ],
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM


def test_inside_launcher_detection():
    assert inside_launcher({"LOCAL_RANK": "0"}) and inside_launcher({"RANK": "1", "WORLD_SIZE": "2"})
    assert not inside_launcher({"ACCELERATE_USE_CPU": "True"})


# ------------------------------------------------------------------------------- world checks (fakes)


def fake_trainer(world_size: int, deepspeed: bool = False):
    return SimpleNamespace(
        args=SimpleNamespace(world_size=world_size),
        is_deepspeed_enabled=deepspeed,
        accelerator=SimpleNamespace(state=SimpleNamespace(num_processes=world_size)),
    )


def test_world_check_catches_the_cpu_world_size_trap(monkeypatch):
    """The trap seen here: 2 real ranks, the Trainer believing in 1 (every rank unsharded)."""
    import trainers.distributed as d

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(d, "process_group_size", lambda: 2)
    with pytest.raises(WorldMismatchError, match="world_size=1, process group 2 ranks"):
        check_world(fake_trainer(1))
    check_world(fake_trainer(2))
    with pytest.raises(WorldMismatchError, match="runs without DeepSpeed"):
        check_world(fake_trainer(2), deepspeed_config="ds_configs/zero2.json")
    with pytest.raises(WorldMismatchError, match="no DeepSpeed config was requested"):
        check_world(fake_trainer(2, deepspeed=True))
    check_world(fake_trainer(2, deepspeed=True), deepspeed_config="ds_configs/zero2.json")
    monkeypatch.setattr(d, "process_group_size", lambda: None)
    with pytest.raises(WorldMismatchError, match="no process group"):
        check_world(fake_trainer(2))


def test_world_guard_catches_an_unsharded_dataloader(monkeypatch):
    import trainers.distributed as d

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(d, "process_group_size", lambda: 2)
    trainer = fake_trainer(2)
    trainer.train_dataset = list(range(64))
    args = SimpleNamespace(per_device_train_batch_size=4, process_index=0, local_process_index=0)
    guard = WorldGuard(trainer)
    with pytest.raises(WorldMismatchError, match="16 batches per epoch, expected 8"):
        guard.on_train_begin(args, None, None, train_dataloader=[None] * 16)
    guard.on_train_begin(args, None, None, train_dataloader=[None] * 8)
    assert guard.facts.batches_per_epoch == 8 and guard.facts.world_size == 2
    assert expected_batches_per_rank(30, 4, 2) == 4  # 8 batches (last partial) over 2 ranks
