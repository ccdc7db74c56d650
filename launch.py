#!/usr/bin/env python
"""Run a fine-tuning recipe: `python launch.py RECIPE [key=value ...] [--dry-run] [--launcher ...]`.

Works as written under `accelerate launch`, `torchrun` and `deepspeed` (it then trains in-process),
or builds the launcher command itself with `--launcher`, runs it and waits (a user error found in a
worker is printed last, once, with exit status 2).
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Fine-tune a vision / vision-language model from a recipe file.",
        epilog="Example: python launch.py recipes/blip_progressive.py training.epochs=3 --dry-run",
    )
    parser.add_argument("recipe", help="path to a recipe file, e.g. recipes/blip_progressive.py")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. training.lr=1e-4 data.train=..."
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved plan and exit without training"
    )
    parser.add_argument("--demo", action="store_true", help="tiny offline model and shipped sample data")
    parser.add_argument("--no-wandb", action="store_true", help="turn W&B logging off (default: on, offline)")
    parser.add_argument("--output-dir", help="where the run writes (default: the recipe's output_dir)")
    parser.add_argument(
        "--config",
        help="YAML file of recipe settings, applied before the key=value overrides "
        "(default: the recipe's `config`, e.g. config/clip.yaml)",
    )
    parser.add_argument(
        "--ablate",
        metavar="KEY=V1,V2,...",
        help="one run per value, each in <output_dir>/sweep-<i>, then a comparison table "
        "(one after another here; a job array with --launcher slurm)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (training, evaluation, --ablate), in every worker process",
    )
    launch = parser.add_argument_group("launching")
    launch.add_argument("--launcher", choices=["none", "accelerate", "torchrun", "deepspeed", "slurm"])
    launch.add_argument("--nproc", type=int, help="processes (GPUs) per node")
    launch.add_argument("--nnodes", type=int, help="number of nodes")
    launch.add_argument("--node-rank", type=int, help="rank of this node")
    launch.add_argument("--master-addr", help="address of the rank-0 node")
    launch.add_argument("--master-port", type=int, help="rendezvous port")
    launch.add_argument("--zero", type=int, choices=[1, 2, 3], help="DeepSpeed ZeRO stage (uses ds_configs/)")
    launch.add_argument("--offload", action="store_true", help="ZeRO CPU offload (with --zero 2 or 3)")
    launch.add_argument("--deepspeed", dest="deepspeed_config", help="DeepSpeed JSON config file")
    slurm = parser.add_argument_group("slurm (with --launcher slurm)")
    slurm.add_argument("--nodes", type=int, help="nodes (one launcher per node through srun)")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per node = processes per node (0: CPU job)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument(
        "--time", help="time limit, e.g. 12:00:00 (USR1 slurm.signal_lead s before: checkpoint, requeue)"
    )
    slurm.add_argument("--account", help="Slurm account")
    slurm.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="'KEY=V ...'",
        help="one job-array task per --sweep with these extra overrides, optionally led by another recipe file",
    )
    launch.add_argument(
        "--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS
    )  # set by `deepspeed`
    return parser


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """Launcher flags and shortcuts expressed as recipe overrides, so the plan shows one source of truth."""
    pairs = {
        "launch.launcher": args.launcher,
        "launch.nproc": args.nproc,
        "launch.nnodes": args.nnodes,
        "launch.node_rank": args.node_rank,
        "launch.master_addr": args.master_addr,
        "launch.master_port": args.master_port,
        "launch.zero": args.zero,
        "launch.offload": True if args.offload else None,
        "launch.deepspeed_config": args.deepspeed_config,
        "slurm.nodes": args.nodes,
        "slurm.gpus_per_node": args.gpus_per_node,
        "slurm.partition": args.partition,
        "slurm.time": args.time,
        "slurm.account": args.account,
        "output_dir": args.output_dir,
        "config": args.config,
        "reporting.wandb": False if args.no_wandb else None,
    }
    return [f"{k}={v}" for k, v in pairs.items() if v is not None]


def worker_args(args: argparse.Namespace) -> list[str]:
    """What each worker gets after the launcher's options: the recipe, `key=value` overrides and `--demo`.

    Every option becomes an override (`--nproc 2` -> `launch.nproc=2`): argparse in torchrun, accelerate and
    deepspeed resolves abbreviated options across the whole argv, even after the script name, so a forwarded
    `--nproc` fails as ambiguous with torchrun's `--nproc-per-node`. `--demo` abbreviates none of their options
    (tests/distributed/test_launch_commands.py parses worker arguments with each launcher's own parser).
    """
    return [args.recipe, *(["--demo"] if args.demo else []), *args.overrides, *cli_overrides(args)]


def overrides_for_job(args: argparse.Namespace) -> list[str]:
    """Overrides a Slurm job passes on to `launch.py` inside the job (the launcher choice stays outside)."""
    deepspeed = ("launch.zero=", "launch.offload=", "launch.deepspeed_config=")
    return [
        *args.overrides,
        *(
            o
            for o in cli_overrides(args)
            if o.startswith(deepspeed) or not o.startswith(("launch.", "slurm."))
        ),
    ]


def job_flags(args: argparse.Namespace) -> list[str]:
    return ["--demo"] if args.demo else []


def report_error(message: str, block: bool = False) -> None:
    """Print the paragraph after everything already written, so it is the last thing this process says.

    `block`: set it apart with a blank line (after a launcher's own report of the failed worker).
    """
    from trainers.launchers.commands import relay_worker_error

    sys.stdout.flush()
    for handler in logging.getLogger().handlers:
        handler.flush()
    if not relay_worker_error(
        message
    ):  # a worker of `launch.py --launcher`: the parent prints it, once, last
        print(("\n" if block else "") + f"error: {message}", file=sys.stderr, flush=True)


def skip_unused_libraries(recipe, args: argparse.Namespace, deepspeed_config: object) -> list[str]:
    """Keep bitsandbytes (no quantization, no 8-bit optimizer) and deepspeed (no DeepSpeed config or launcher) out of a launched
    process that will not use them (trainers/lazy_imports.py); the names kept out.

    Only in a process of its own (`python launch.py`, each launcher worker): `launch.main` called inside
    another program leaves that program's imports alone. Nor with a sweep or `--ablate`, which may run a
    variant that uses them in this process.
    """
    if not args.may_skip_libraries:
        return []
    from trainers.lazy_imports import (
        DEEPSPEED_LIBRARY,
        QUANTIZATION_LIBRARY,
        keep_out,
        optimizer_uses_bitsandbytes,
    )

    unused = []
    if recipe.model.quantization is None and not optimizer_uses_bitsandbytes(recipe.training.optim):
        unused.append(QUANTIZATION_LIBRARY)
    if deepspeed_config is None and recipe.launch.launcher != "deepspeed":
        unused.append(DEEPSPEED_LIBRARY)
    return [name for name in unused if keep_out(name)]


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """The CLI; `own_process`: this process runs nothing but this launch (`python launch.py`)."""
    args = build_parser().parse_intermixed_args(argv)
    args.may_skip_libraries = own_process and not (
        args.ablate or args.sweep
    )  # each --ablate variant inherits it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainers.lazy_imports import quiet_bitsandbytes_import

    quiet_bitsandbytes_import()  # pulled in by transformers/peft, it warns about optional CPU kernels we don't use
    from trainers.errors import UserFacingError
    from trainers.reporting import redact

    redact.install(args.overrides)  # secrets never reach logs, saved files or W&B
    from trainers.launchers import worker_watch
    from trainers.launchers.commands import worker_folder

    folder = worker_folder()  # a worker of `launch.py --launcher`: say which rank this is
    worker_watch.announce(folder, os.environ)
    how = worker_watch.INTERRUPTED
    try:
        # in a copy of the context: what one call decides (a Slurm submission leaves the Java check to the
        # job's nodes) ends with it, even when the caller runs `main` again in the same process
        status = contextvars.copy_context().run(_main, args)
        how = f"exit {status}"
        return status
    except UserFacingError as exc:
        how = worker_watch.USER_ERROR
        report_error(redact.redact_text(str(exc)))
        return exc.exit_code
    except Exception as exc:
        from trainers.launchers.commands import peer_stopped_on_user_error

        how = type(exc).__name__
        if not peer_stopped_on_user_error():
            raise
        how = worker_watch.AFTER_PEER
        first_line = redact.redact_text(str(exc)).strip().splitlines()[:1]
        logging.getLogger("launch").warning(
            "stopped after another rank's error: %s: %s",
            type(exc).__name__,
            first_line[0][:200] if first_line else "",
        )
        return 1
    finally:
        worker_watch.ended(folder, os.environ, how)


def _main(args: argparse.Namespace) -> int:
    from trainers.launchers.commands import build_launch_command, inside_launcher, launcher_world_size
    from trainers.launchers.deepspeed_config import deepspeed_config_for
    from trainers.recipe import load_recipe
    from trainers.recipe.loading import load_resolved

    if args.quiet:  # inherited by the launcher and every worker it starts
        from trainers.reporting.progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"
    overrides = [*args.overrides, *cli_overrides(args)]
    if args.launcher == "slurm" and "SLURM_JOB_ID" not in os.environ:  # this process only submits the job
        from trainers.metrics.java import defer_java_check_to_the_nodes

        defer_java_check_to_the_nodes()
    resolved = load_resolved(args.recipe, overrides, demo=args.demo)  # its task and family, looked up once
    recipe = resolved.recipe
    # DeepSpeed config (--zero / --deepspeed): resolved and checked here, before any process starts.
    deepspeed_config = deepspeed_config_for(
        recipe.launch,
        recipe.training,
        launcher_world_size(recipe.launch),
        param_groups=recipe.param_groups,
        stages=recipe.stages,
        # a Slurm job resolves precision "auto" on its own nodes: accept what the file says
        precision="any" if recipe.launch.launcher == "slurm" else None,
    )
    skip_unused_libraries(recipe, args, deepspeed_config)
    under_launcher = inside_launcher()
    if args.ablate:
        from trainers.analysis import ablation

        if args.sweep:
            raise ablation.AblateSyntaxError("--ablate and --sweep both name variants; use one of them.")
        if recipe.launch.launcher != "slurm" or under_launcher:
            return ablation.ablate_locally(
                args,
                recipe,
                _main,
                lambda extra: load_recipe(args.recipe, [*overrides, *extra], demo=args.demo),
            )
        spec = ablation.parse_ablate(args.ablate)
        args.sweep = ablation.sweep_entries(spec)  # one job-array task per value, in <output_dir>/sweep-<i>
        if not args.dry_run:
            ablation.write_plan(spec, Path(recipe.resolved_output_dir()).resolve(), args.recipe)
    command = job = None
    if recipe.launch.launcher == "slurm" and not under_launcher:
        from trainers.launchers.slurm import launch_slurm, prepare_job

        job = prepare_job(
            recipe,
            args.recipe,
            overrides_for_job(args),
            job_flags(args),
            os.path.abspath(__file__),
            args.sweep,
            load=lambda path, extra: load_recipe(path, extra, demo=args.demo),
        )
        if not args.dry_run:
            return launch_slurm(job)
        command = ["sbatch", str(job.script_path)]
    elif not under_launcher:  # the workers see the launcher's environment and train in-process
        command = build_launch_command(recipe.launch, os.path.abspath(__file__), worker_args(args))

    if args.dry_run:
        from trainers.plan import build_run_plan, load_model, prepare_model
        from trainers.reporting.memory_plan import memory_plan

        model, processor, source = load_model(resolved, meta_ok=True)
        prepared = prepare_model(model, processor, source, resolved, strict=False)
        plan = build_run_plan(resolved, prepared, command, overrides)
        plan.memory = memory_plan(recipe, prepared, resolved.task, activations=True)  # + measured activations
        print(plan.render())
        if job is not None:
            print(f"\nsbatch script ({job.script_path}, written on submit):\n{job.script}")
        return 0
    from trainers.preflight import check_before_training  # data paths, the output dir's previous run

    if check_before_training(resolved):  # already complete: nothing to train
        return 0
    if command is not None:
        if not recipe.model.use_demo_model:  # once here, not in every worker
            resolved.family.check_available(recipe.model.id, recipe.model.revision)
        from trainers.errors import UserFacingError
        from trainers.launchers.commands import run_launcher
        from trainers.launchers.worker_watch import WorkerWatch
        from trainers.reporting.redact import redact_text

        print("launching: " + redact_text(" ".join(command)), flush=True)
        watch = WorkerWatch()
        status, errors = run_launcher(command, watch)
        if errors:  # the launcher's own report of the failed worker came first; the reason comes last
            report_error(redact_text(errors[0]), block=True)
            return UserFacingError.exit_code
        if (
            status != 0
        ):  # a rank died: which one, and what rerunning resumes from, after the launcher's report
            from trainers.launch_outcome import rank_died_message

            report_error(rank_died_message(recipe, watch.first, status), block=True)
        return status
    from trainers.run import run_training

    summary = run_training(resolved, overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        for line in final_lines(summary, recipe.resolved_output_dir()):
            print(line, flush=True)
    return 0


def final_lines(summary: dict, output_dir: str) -> list[str]:
    """The run's last lines: steps and best metric, the test split, the overfitting signal still standing at
    the end (with the epoch `best/` holds, so the two never read as a contradiction), the adapter's size."""
    best = summary["best_metric"]
    lines = [
        f"done: {summary['global_steps']} steps; best {best['name']} = {best['value']}"
        f"{_start_and_baseline(summary)}; results in {output_dir}"
    ]
    if summary.get("test_metrics"):
        scores = ", ".join(f"{k} = {v:.4g}" for k, v in summary["test_metrics"].items() if "/" not in k)
        lines.append(f"test split, best model: {scores}")
    if summary.get("overfitting"):
        signal = summary["overfitting"]
        kept = (
            f"best/ holds epoch {summary['best_epoch']:g} ({best['name']} = {best['value']:.4g})"
            if summary.get("best_epoch") is not None and best.get("value") is not None
            else "best/ holds the best evaluation"
        )
        lines.append(f"overfitting: {signal['detail']}, since epoch {signal['since_epoch']}; {kept}")
    if summary.get("lora"):
        lora = summary["lora"]
        lines.append(
            f"LoRA adapter: {lora['adapter_bytes'] / 2**20:.2f} MiB vs full model "
            f"{lora['full_model_bytes'] / 2**20:.2f} MiB ({lora['adapter_dir']})"
        )
    return lines


def _start_and_baseline(summary: dict) -> str:
    """Where the best stands between the start and the prior: ` (before training S; image-blind baseline B)`."""
    best = summary["best_metric"]
    parts = []
    if best.get("at_start") is not None:
        parts.append(f"before training {best['at_start']:.4g}")
    baseline = (summary.get("baseline") or {}).get(best["name"])
    if isinstance(baseline, int | float):
        parts.append(f"image-blind baseline {baseline:.4g}")
    return f" ({'; '.join(parts)})" if parts else ""


if __name__ == "__main__":
    sys.exit(main(own_process=True))
