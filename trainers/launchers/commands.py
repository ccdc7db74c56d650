"""Turn `Launch` settings into the command that starts the worker processes, and run it.

The workers' own arguments are only the recipe and `key=value` overrides (see `launch.worker_args`):
torchrun, accelerate and deepspeed parse their argv with argparse, which resolves abbreviated options across
the whole command line, even after the script name (`--nproc` is "ambiguous" for torchrun).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainers.errors import RecipeError
from trainers.launchers.deepspeed_config import resolve_deepspeed_config
from trainers.launchers.worker_watch import WorkerWatch
from trainers.recipe.config import Launch

LAUNCHER_ENV_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "ACCELERATE_DYNAMO_BACKEND", "DEEPSPEED_LAUNCHED")
DEFAULT_MASTER_PORT = 29500
# Set by `launch.py --launcher ...` for its launcher: where each worker leaves its user-facing error.
WORKER_ERRORS_ENV = "LAUNCH_PY_WORKER_ERRORS"


def inside_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True when a launcher (torchrun, accelerate, deepspeed, srun) already started this process."""
    env = os.environ if env is None else env
    return any(k in env for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (single-node rendezvous; another run may use the default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def master_port(launch: Launch) -> int:
    """The configured port; unset, a free one on a single node (several runs may share a machine), else 29500."""
    if launch.master_port is not None:
        return launch.master_port
    return free_port() if launch.nnodes == 1 else DEFAULT_MASTER_PORT


def check_launch(launch: Launch) -> None:
    """Contradictions a user can fix on the command line."""
    if launch.nproc < 1 or launch.nnodes < 1:
        raise RecipeError(
            f"--nproc and --nnodes (launch.nproc, launch.nnodes) must be >= 1, got nproc={launch.nproc}, "
            f"nnodes={launch.nnodes}."
        )
    if not 0 <= launch.node_rank < launch.nnodes:
        raise RecipeError(
            f"--node-rank must be in [0, {launch.nnodes}), got launch.node_rank={launch.node_rank}: give each node "
            "a rank from 0 to nnodes-1."
        )
    if launch.launcher == "none" and (launch.zero is not None or launch.deepspeed_config):
        raise RecipeError(
            "DeepSpeed (--zero / --deepspeed) needs a launcher: add --launcher deepspeed (or torchrun / accelerate), "
            "with --nproc 1 for a single process, or start launch.py under `deepspeed` yourself."
        )
    if launch.launcher == "none" and (launch.nproc > 1 or launch.nnodes > 1):
        raise RecipeError(
            f"--nproc {launch.nproc} / --nnodes {launch.nnodes} need a launcher: add --launcher torchrun, "
            "accelerate or deepspeed (or start launch.py under one yourself)."
        )


def build_launch_command(launch: Launch, script: str, script_args: Sequence[str]) -> list[str] | None:
    """The command that starts `script script_args` under the configured launcher, or None (in-process).

    The workers get the same arguments and see the launcher's environment, so they train in-process;
    `--zero N` / `--deepspeed FILE` travel with them and are resolved there to the same config file.
    """
    check_launch(launch)
    ds_config = resolve_deepspeed_config(launch)
    if launch.launcher == "none":
        return None
    port = master_port(launch)
    if launch.launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={launch.nproc}",
            f"--nnodes={launch.nnodes}",
            f"--node_rank={launch.node_rank}",
            f"--master_addr={launch.master_addr}",
            f"--master_port={port}",
            script,
            *script_args,
        ]
    if launch.launcher == "accelerate":
        world = launch.nproc * launch.nnodes
        if ds_config:
            mode = ["--use_deepspeed", f"--deepspeed_config_file={ds_config}"]
        else:
            mode = ["--multi_gpu"] if world > 1 else []
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *mode,
            f"--num_processes={world}",
            f"--num_machines={launch.nnodes}",
            f"--machine_rank={launch.node_rank}",
            f"--main_process_ip={launch.master_addr}",
            f"--main_process_port={port}",
            script,
            *script_args,
        ]
    if launch.launcher == "deepspeed":
        # `python -m deepspeed.launcher.runner` is the `deepspeed` script, without relying on PATH.
        nodes = [f"--num_nodes={launch.nnodes}"]
        if launch.nnodes > 1:  # every node runs this command itself (as with torchrun); no ssh/pdsh fan-out
            nodes += ["--no_ssh", f"--node_rank={launch.node_rank}"]
        return [
            sys.executable,
            "-m",
            "deepspeed.launcher.runner",
            f"--num_gpus={launch.nproc}",
            *nodes,
            f"--master_addr={launch.master_addr}",
            f"--master_port={port}",
            script,
            *script_args,
        ]
    raise RecipeError(f"launcher {launch.launcher!r} is not handled by launch.py's process launchers.")


def launcher_world_size(launch: Launch, env: Mapping[str, str] | None = None) -> int:
    """Processes of the run: WORLD_SIZE when already under a launcher, else what the launch settings start."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        return int(env["WORLD_SIZE"])
    return launch.nproc * launch.nnodes if launch.launcher != "none" else 1


# ------------------------------------------------------------------------- running the launcher


def run_launcher(command: Sequence[str], watch: WorkerWatch | None = None) -> tuple[int, list[str]]:
    """Run the launcher command as a child; (its exit status, the user-facing errors its workers relayed).

    Not exec'd, because launchers report a failed worker their own way: torchrun and accelerate exit 1 after a
    traceback of their own, deepspeed passes the worker's status on. Staying the parent lets `launch.py` print
    the workers' paragraph last and exit 2. Ctrl-C reaches the launcher from the terminal (same process group)
    and is ignored here; SIGTERM is forwarded to it. `watch` follows the workers while it runs (which rank died).
    """
    with tempfile.TemporaryDirectory(prefix="launch-errors-") as errors:
        child = subprocess.Popen(list(command), env={**os.environ, WORKER_ERRORS_ENV: errors})
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda sig, _frame: child.send_signal(sig)),
        }
        if watch is not None:
            watch.start(Path(errors))
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if watch is not None:
                watch.stop()  # reads what it needs from the folder before it is removed
                watch.first = watch.first_dead()
        relayed = worker_errors(Path(errors))
    return (128 - status if status < 0 else status), relayed


def worker_folder(env: Mapping[str, str] | None = None) -> str | None:
    """The folder `launch.py --launcher` gave this worker (errors, which rank it is), or None."""
    env = os.environ if env is None else env
    return env.get(WORKER_ERRORS_ENV) if inside_launcher(env) else None


def relay_worker_error(message: str, env: Mapping[str, str] | None = None) -> bool:
    """In a worker started by `launch.py --launcher`, hand `message` to it (printed once, last); False otherwise."""
    env = os.environ if env is None else env
    folder = env.get(WORKER_ERRORS_ENV)
    if not folder or not inside_launcher(env):
        return False
    try:
        (Path(folder) / f"rank{int(env.get('RANK', '0')):06d}.txt").write_text(message)
    except OSError:
        return False  # the parent is gone: the worker prints it itself
    return True


def peer_stopped_on_user_error(env: Mapping[str, str] | None = None, wait_s: float = 10.0) -> bool:
    """In a worker of `launch.py --launcher`: whether another rank relayed a user error (waiting up to `wait_s`).

    A rank that stops on bad input leaves the process group; its peers then fail inside a collective with the
    transport's error (gloo: "Connection closed by peer"). That traceback is a consequence, not a second problem.
    The failed rank relays its message just after leaving the group, hence the short wait.
    """
    env = os.environ if env is None else env
    folder = env.get(WORKER_ERRORS_ENV)
    if not folder or not inside_launcher(env):
        return False
    mine = f"rank{int(env.get('RANK', '0')):06d}.txt"
    deadline = time.monotonic() + wait_s
    while not any(p.name != mine for p in Path(folder).glob("rank*.txt")):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def worker_errors(folder: Path) -> list[str]:
    """Relayed messages by rank, each distinct one once (every rank usually finds the same bad input)."""
    messages = [p.read_text() for p in sorted(folder.glob("rank*.txt"))]
    return list(dict.fromkeys(m for m in messages if m.strip()))
