"""The GPU check: every model family at real size in bf16, through our stack and through a plain Trainer.

    python -m benchmarks.gpu_check            # on a GPU machine: real-size models, bf16 (no network needed)
    python -m benchmarks.gpu_check --smoke    # anywhere: tiny demo models on CPU, a few steps (the test suite)

Per family (the first shipped demo recipe of each, its freezing and LoRA as declared), with random weights
in the real architecture (the known config the meta-device counts use: no hub, no download), on the demo's
images resized by the processor to the real input size (`REAL_INPUT` below):
- median step time, ours (`setup_run`: param groups, task loss, token-mean loss, callbacks) against a plain
  `transformers.Trainer` (the task's loss hook only, where the model has none) on the same model and batch;
- images/s of ours; peak `torch.cuda.max_memory_allocated` against the `--dry-run` plan's prediction (model
  state per device + measured activations, `plan.json`);
- ours with gradient checkpointing (when `training.gradient_checkpointing` exists; otherwise one stated line);
- loader workers: ours with `training.num_workers=auto` against 0.
Then one 2-process NCCL run of the ViT LoRA demo when the machine has two GPUs (else a stated skip line).

Writes `gpu_check.json` and `gpu_check.md` into `benchmarks/results/gpu/` (or `--out`); exits 1 if any run
failed (the table still lists the others). Step times skip the first `WARMUP` steps (allocator, kernels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine, quiet, table
from benchmarks.demo import RECIPES, demo_recipe, real_recipe, scratch
from benchmarks.memory import by_family

OUT = ROOT / "benchmarks" / "results" / "gpu"
WARMUP = 3
# Real input size per family id: attributes set on the demo's image processor (its tiny processors make 32-64 px
# images) and processor, and config fields the real model takes from the demo model (Florence-2's image token is
# the tiny tokenizer's). A family missing here runs at its demo processor's size, and the table says so.
REAL_INPUT: dict[str, dict[str, Any]] = {
    "vit": {"image_processor": {"size": {"height": 224, "width": 224}}},
    "vitpose": {"image_processor": {"size": {"height": 256, "width": 192}}},
    "blip": {"image_processor": {"size": {"height": 384, "width": 384}}},
    "detr": {"image_processor": {"size": {"shortest_edge": 800, "longest_edge": 1333}}},
    "florence2": {
        "image_processor": {
            "size": {"height": 768, "width": 768},
            "crop_size": {"height": 768, "width": 768},
            "image_seq_length": 577,  # (768 / 32)^2 + 1
        },
        "processor": {"num_image_tokens": 577},
        "demo_config": ("image_token_id",),
    },
    "dual-encoder": {"image_processor": {"size": {"height": 224, "width": 224}}},
}
BATCH = {"real": 8, "smoke": 4}
STEPS = {"real": 20, "smoke": 4}


@dataclasses.dataclass
class Row:
    family: str
    recipe: str
    variant: str
    ok: bool = True
    error: str | None = None
    median_step_s: float | None = None
    images_per_s: float | None = None
    peak_allocated: int | None = None
    predicted: int | None = None
    steps: int = 0
    note: str = ""


class StepTimes:
    """Wall time between consecutive optimizer steps (data loading included), CUDA synchronised."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def callback(self) -> Any:
        from transformers import TrainerCallback

        times = self

        class Timer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                _sync()
                times.ends.append(time.perf_counter())

        return Timer()

    def median(self) -> float | None:
        gaps = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)][WARMUP - 1 :]
        return statistics.median(gaps) if gaps else None


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def has_gradient_checkpointing() -> bool:
    from trainers.recipe.config import Training

    return "gradient_checkpointing" in {f.name for f in dataclasses.fields(Training)}


def real_size_loader(family_id: str, device: str) -> Callable[..., Any]:
    """A stand-in for `trainers.plan.load_model`: the real architecture with random weights on `device`, and the
    demo's processor set to the real input size."""
    import torch

    from trainers.plan import load_model

    def load(recipe: Any, meta_ok: bool = False) -> tuple[Any, Any, str]:
        from trainers.recipe.resolved import resolve_recipe

        resolved = resolve_recipe(recipe)
        meta, _, _ = load_model(resolved, meta_ok=True)
        kwargs = resolved.task.model_kwargs(resolved.recipe)
        tiny, processor = resolved.family.build_tiny()(resolved.recipe.model.demo, seed=0, **kwargs)
        real = REAL_INPUT.get(family_id, {})
        for key, value in real.get("image_processor", {}).items():
            setattr(getattr(processor, "image_processor", processor), key, value)
        for key, value in real.get("processor", {}).items():
            setattr(processor, key, value)
        for key in real.get("demo_config", ()):
            setattr(meta.config, key, getattr(tiny.config, key))
        torch.manual_seed(0)
        with torch.device(device):
            model = type(meta)(meta.config)
        return model, processor, f"random init, real architecture of {resolved.recipe.model.id}"

    return load


def predicted_bytes(output_dir: Path) -> int | None:
    """The dry-run plan's bytes per device: model state under the recipe's engine + measured activations."""
    plan = json.loads((output_dir / "plan.json").read_text()).get("memory") or {}
    if not plan:
        return None
    zero = plan.get("zero")
    state = plan["per_device"]["ddp" if zero is None else f"zero{zero}"]["total"]
    activations = (plan.get("activations") or {}).get("bytes") or 0
    return int(state + activations)


def _images(batch_count: int, batch: int) -> int:
    return batch_count * batch


def run_variant(
    key: str, family_id: str, variant: str, smoke: bool, overrides: list[str], plain: bool = False
) -> Row:
    """One training run of `steps` steps; ours (`setup_run` + `trainer.train`) or the plain Trainer."""
    import torch

    import trainers.run as run_module
    from trainers.run import setup_run
    from trainers.tasks.interface import TaskLossMixin

    size = "smoke" if smoke else "real"
    batch, steps = BATCH[size], STEPS[size]
    row = Row(family_id, key, variant)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = scratch(f"gpu_{key}_{variant}")
    common = [
        f"training.batch_size={batch}",
        f"training.max_steps={steps}",
        "training.precision=bf16",
        "training.logging_steps=1",
        "training.save_total_limit=1",
        "training.eval_on_start=false",  # every variant measures training steps only
        "training.resume=overwrite",
        "data.max_val_samples=2",
        "early_stopping=none",
        *overrides,
    ]
    original = run_module.load_model
    try:
        if smoke:
            recipe = demo_recipe(key, common, output_dir=out)
        else:
            recipe = real_recipe(key)
            from trainers.recipe.overrides import apply_overrides

            apply_overrides(recipe, [f"output_dir={out}", *common])
            run_module.load_model = real_size_loader(family_id, device)
        ctx = setup_run(recipe)
        timer = StepTimes()
        trainer = ctx.trainer
        if plain:  # the same model, data, collator and arguments; the Trainer's own optimizer and loss
            from transformers import Trainer

            class PlainTrainer(TaskLossMixin, Trainer):
                pass

            args = ctx.trainer.args  # no evaluation: the plain run only trains
            args.eval_strategy, args.load_best_model_at_end, args.eval_on_start = "no", False, False
            trainer = PlainTrainer(
                model=ctx.prepared.model,
                args=args,
                train_dataset=ctx.data.train,
                data_collator=ctx.data.collator,
            )
            trainer.task = ctx.task
        trainer.add_callback(timer.callback())
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        row.steps = len(timer.ends)
        row.median_step_s = timer.median()
        if row.median_step_s:
            row.images_per_s = batch / row.median_step_s
        if torch.cuda.is_available():
            row.peak_allocated = int(torch.cuda.max_memory_allocated())
        row.predicted = predicted_bytes(out)
        if row.steps < steps:
            raise RuntimeError(f"{row.steps} steps of {steps}")
    except Exception as error:  # recorded: the table lists the failure, the exit status says it
        row.ok, row.error = False, f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        run_module.load_model = original
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def variants() -> list[tuple[str, list[str], bool]]:
    """(name, overrides, plain Trainer?) of each run per family."""
    chosen = [
        ("ours", ["training.num_workers=0"], False),
        ("plain Trainer", ["training.num_workers=0"], True),
    ]
    if has_gradient_checkpointing():
        chosen.append(
            (
                "ours + checkpointing",
                ["training.num_workers=0", "training.gradient_checkpointing=true"],
                False,
            )
        )
    chosen.append(("ours, workers auto", ["training.num_workers=auto"], False))
    return chosen


def nccl_run(out: Path) -> dict[str, Any]:
    """The ViT LoRA demo on 2 GPUs (torchrun, NCCL), or why it was skipped."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return {
            "ran": False,
            "line": f"2-process NCCL run skipped: {count} GPU(s) on this machine, 2 needed.",
        }
    started = time.perf_counter()
    command = [
        sys.executable,
        "launch.py",
        "recipes/vit_lora.py",
        "--demo",
        "--launcher",
        "torchrun",
        "--nproc",
        "2",
        "training.epochs=1",
        f"output_dir={scratch('gpu_nccl')}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    ok = result.returncode == 0
    return {
        "ran": True,
        "ok": ok,
        "seconds": time.perf_counter() - started,
        "line": f"2-process NCCL run ({' '.join(command[1:])}): "
        + ("passed" if ok else f"failed (exit {result.returncode})"),
        "tail": None if ok else result.stderr[-3000:],
    }


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def markdown(rows: list[Row], smoke: bool, nccl: dict[str, Any], lines: list[str]) -> str:
    header = ["family", "recipe", "run", "median step (s)", "images/s", "peak allocated", "plan predicts", ""]
    body = [
        [
            r.family,
            r.recipe,
            r.variant,
            r.median_step_s if r.median_step_s is not None else "-",
            r.images_per_s if r.images_per_s is not None else "-",
            _mib(r.peak_allocated),
            _mib(r.predicted),
            "ok" if r.ok else f"FAILED: {r.error}",
        ]
        for r in rows
    ]
    ratios = []
    by = {(r.family, r.variant): r for r in rows}
    for family in dict.fromkeys(r.family for r in rows):
        ours, plain = by.get((family, "ours")), by.get((family, "plain Trainer"))
        workers = by.get((family, "ours, workers auto"))
        ratio = (
            ours.median_step_s / plain.median_step_s
            if ours and plain and ours.median_step_s and plain.median_step_s
            else None
        )
        speedup = (
            ours.median_step_s / workers.median_step_s
            if ours and workers and ours.median_step_s and workers.median_step_s
            else None
        )
        ratios.append([family, ratio if ratio is not None else "-", speedup if speedup is not None else "-"])
    kind = (
        "smoke run on CPU (tiny models, a few steps: numbers not meaningful)" if smoke else "real size, bf16"
    )
    return "\n".join(
        [
            f"# GPU check ({kind})",
            "",
            table(header, body),
            "",
            table(["family", "step time ours / plain Trainer", "loader workers speedup (0 → auto)"], ratios),
            "",
            *[f"- {line}" for line in lines],
            f"- {nccl['line']}",
        ]
    )


def run(smoke: bool, out: Path, families: list[str] | None = None) -> tuple[dict[str, Any], str, bool]:
    import torch

    if not smoke and not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks.gpu_check needs a CUDA GPU; use --smoke for the CPU check of the script."
        )
    groups = by_family(list(RECIPES.values()))
    if smoke:
        groups = {"vit": groups["vit"]}
    if families:
        groups = {f: r for f, r in groups.items() if f in families}
    rows: list[Row] = []
    lines = []
    if not has_gradient_checkpointing():
        lines.append(
            "gradient checkpointing column skipped: this checkout has no training.gradient_checkpointing."
        )
    for family, recipes in groups.items():
        key = next((r.name for r in recipes if r.name.endswith("_lora")), recipes[0].name)
        if family not in REAL_INPUT:
            lines.append(f"{family}: no real input size declared; ran at its demo processor's size")
        for name, overrides, plain in variants():
            row = run_variant(key, family, name, smoke, overrides, plain)
            print(f"{family} {name}: {'ok' if row.ok else row.error} {row.median_step_s}", flush=True)
            rows.append(row)
    nccl = nccl_run(out) if not smoke else {"ran": False, "line": "2-process NCCL run: not part of --smoke."}
    data = {
        "smoke": smoke,
        "machine": machine(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "rows": [dataclasses.asdict(r) for r in rows],
        "nccl": nccl,
        "notes": lines,
    }
    ok = all(r.ok for r in rows) and nccl.get("ok", True)
    return data, markdown(rows, smoke, nccl, lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny demo models on CPU, a few steps")
    parser.add_argument("--out", type=Path, default=OUT, help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--family", action="append", help="only these family ids (repeatable)")
    args = parser.parse_args(argv)
    quiet()
    os.environ.setdefault("WANDB_MODE", "disabled")
    started = time.perf_counter()
    data, text, ok = run(args.smoke, args.out, args.family)
    data["wall_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(text + f"\n\nWall time: {data['wall_seconds']:.0f} s.\n")
    print(text)
    print(f"\nwritten: {args.out / 'gpu_check.json'} ({data['wall_seconds']:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
