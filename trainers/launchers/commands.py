"""Turn `Launch` settings into the command that starts the worker processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from trainers.recipe.config import Launch

LAUNCHER_ENV_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "ACCELERATE_DYNAMO_BACKEND", "DEEPSPEED_LAUNCHED")


def inside_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True when a launcher (torchrun, accelerate, deepspeed, srun) already started this process."""
    env = os.environ if env is None else env
    return any(k in env for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE"))


def build_launch_command(launch: Launch, script: str, script_args: Sequence[str]) -> list[str] | None:
    """The command that starts `script script_args` under the configured launcher, or None (in-process)."""
    if launch.launcher == "none":
        return None
    nodes = [
        f"--nnodes={launch.nnodes}",
        f"--node_rank={launch.node_rank}",
        f"--master_addr={launch.master_addr}",
        f"--master_port={launch.master_port}",
    ]
    if launch.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launch.nproc}", *nodes,
                script, *script_args]
    if launch.launcher == "accelerate":
        world = launch.nproc * launch.nnodes
        mode = ["--use_deepspeed"] if launch.deepspeed_config else (["--multi_gpu"] if world > 1 else [])
        return [
            sys.executable, "-m", "accelerate.commands.launch", *mode,
            f"--num_processes={world}", f"--num_machines={launch.nnodes}",
            f"--machine_rank={launch.node_rank}", f"--main_process_ip={launch.master_addr}",
            f"--main_process_port={launch.master_port}", script, *script_args,
        ]
    if launch.launcher == "deepspeed":
        return [
            "deepspeed", f"--num_gpus={launch.nproc}", f"--num_nodes={launch.nnodes}",
            f"--master_addr={launch.master_addr}", f"--master_port={launch.master_port}", script, *script_args,
        ]
    raise ValueError(f"launcher {launch.launcher!r} is not handled here")
