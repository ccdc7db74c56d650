"""Per-layer gradient-norm ranking over the first steps of a recipe's training.

    python -m trainers.analysis.importance RECIPE [key=value ...] --steps 20 [--demo] [--out DIR] [--quiet]
    torchrun --nproc_per_node 2 -m trainers.analysis.importance RECIPE launch.zero=3 --steps 20

The run is the recipe's own (`trainers.run.setup_run`: its model, freezing, LoRA, data, collator and
Trainer), stopped after `--steps` optimizer steps, with no evaluation, no checkpoint and no gradient clipping
(`training.max_grad_norm=0`, so the norms are the loss's own). At each step, before the optimizer moves the
weights, the full gradient of every trainable parameter is read: `p.grad` without DeepSpeed (after DDP's
all-reduce), `deepspeed.utils.safe_get_full_grad(p)` under DeepSpeed, where `p.grad` is empty or a shard
(ZeRO-2/3). Parameters are grouped by layer (`trainers.analysis.layers`); a layer's norm at a step is the L2
norm of all its gradients, and the ranking is by its mean over the steps. The optimizer does step (the
numbers are those of the run's first steps); the weights are not saved.

Writes `layer_importance.json`, `layer_importance.md` and `layer_importance.png` in `--out` (default
`<output_dir>-importance`), and prints the table. Frozen layers get no gradient and are listed apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainers.analysis.layers import group_names, group_order
from trainers.atomic_files import atomic_path, write_text
from trainers.errors import RecipeError, UserFacingError

logger = logging.getLogger(__name__)

RESULT = "layer_importance"
# what the analysis changes in the recipe: a short run, fresh output dir, nothing clipped, watched or reported
ANALYSIS_OVERRIDES = (
    "training.max_grad_norm=0",
    "early_stopping=none",
    "reporting.wandb=false",
    "reporting.plots=false",
    "training.resume=overwrite",
    "training.save_steps=none",
)


@dataclass
class LayerImportance:
    layer: str
    mean_grad_norm: float  # mean over steps of the layer's gradient L2 norm
    max_grad_norm: float
    share: float  # the layer's part of the summed squared gradient norm over all steps
    rms: float  # mean_grad_norm / sqrt(params): per-parameter size, comparable across layer sizes
    params: int  # trainable parameters in the layer
    norms: list[float] = field(default_factory=list)  # the layer's gradient norm at each step


@dataclass
class ImportanceReport:
    recipe: str
    steps: int
    world_size: int
    gradient_source: str  # "p.grad" | "deepspeed.utils.safe_get_full_grad"
    layers: list[LayerImportance]
    frozen_layers: list[str] = field(default_factory=list)
    # trainable, but no gradient in these steps: gated until a later stage (progressive unfreezing), or unused
    no_gradient_layers: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def full_gradient(param: Any, deepspeed_on: bool) -> Any:
    """The full gradient of one parameter; under DeepSpeed a collective (every rank must call it)."""
    if deepspeed_on:
        from deepspeed.utils import safe_get_full_grad

        return safe_get_full_grad(param)
    return param.grad


class GradNormCapture(TrainerCallback):
    """Reads every trainable parameter's full gradient once per optimizer step, before the step.

    Without DeepSpeed the Trainer's `on_pre_optimizer_step` is the moment. Under DeepSpeed the engine steps
    inside `accelerator.backward` (and then clears its gradients), so the engine's `step` is wrapped instead,
    on the first `on_step_begin`, once the engine exists.
    """

    def __init__(self, trainer: Any, steps: int, progress: bool) -> None:
        self.trainer = trainer
        self.steps = steps
        self.groups = group_names(n for n, _ in trainer.model.named_parameters())
        self.named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
        self.numel: dict[str, int] = {}
        for name, p in self.named:
            self.numel[self.groups[name]] = self.numel.get(self.groups[name], 0) + _numel(p)
        self.per_step: list[dict[str, float]] = []  # squared norm per layer, one dict per step
        self._wrapped = False
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps, desc="gradient norms", unit="step")

    @property
    def deepspeed_on(self) -> bool:
        return bool(self.trainer.is_deepspeed_enabled)

    def capture(self) -> None:
        import torch

        squared: dict[str, float] = dict.fromkeys(self.numel, 0.0)
        for name, param in self.named:
            grad = full_gradient(param, self.deepspeed_on)
            if grad is not None:
                squared[self.groups[name]] += float(torch.sum(grad.detach().double() ** 2))
        self.per_step.append(squared)
        if self._bar is not None:
            self._bar.update(1)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.deepspeed_on and not self._wrapped:
            engine = self.trainer.deepspeed
            original = engine.step

            def step(*a, **kw):
                if engine.is_gradient_accumulation_boundary():
                    self.capture()
                return original(*a, **kw)

            engine.step = step
            self._wrapped = True

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.deepspeed_on:
            self.capture()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _numel(param: Any) -> int:
    from trainers.zero3 import param_numel

    return param_numel(param)


def rank_layers(per_step: Sequence[dict[str, float]], numel: dict[str, int]) -> list[LayerImportance]:
    """Layers by mean gradient norm over the steps, largest first (trainable layers that got no gradient at
    all, e.g. gated until a later stage, are left to `no_gradient`)."""
    total = sum(sum(step.values()) for step in per_step) or 1.0
    rows = []
    for layer in numel:
        norms = [math.sqrt(step.get(layer, 0.0)) for step in per_step]
        mean = sum(norms) / len(norms) if norms else 0.0
        rows.append(
            LayerImportance(
                layer,
                mean,
                max(norms, default=0.0),
                sum(step.get(layer, 0.0) for step in per_step) / total,
                mean / math.sqrt(numel[layer]) if numel[layer] else 0.0,
                numel[layer],
                norms,
            )
        )
    return sorted((r for r in rows if r.max_grad_norm > 0), key=lambda r: r.mean_grad_norm, reverse=True)


def no_gradient(per_step: Sequence[dict[str, float]], numel: dict[str, int]) -> list[str]:
    return [layer for layer in numel if all(step.get(layer, 0.0) == 0 for step in per_step)]


def render_table(report: ImportanceReport, top: int | None = None) -> str:
    lines = [
        f"# Layer importance: {report.recipe}",
        "",
        f"Mean gradient L2 norm per layer over {report.steps} steps ({report.world_size} process(es); "
        f"gradients from `{report.gradient_source}`, unclipped).",
        "",
        "| rank | layer | mean grad norm | max | share | per-param RMS | trainable params |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(report.layers[:top] if top else report.layers, 1):
        lines.append(
            f"| {i} | {row.layer} | {row.mean_grad_norm:.4g} | {row.max_grad_norm:.4g} | "
            f"{100 * row.share:.1f}% | {row.rms:.3g} | {row.params:,} |"
        )
    if report.frozen_layers:
        lines += ["", f"Frozen (no gradient): {', '.join(report.frozen_layers)}"]
    if report.no_gradient_layers:
        lines += [
            "",
            "Trainable but no gradient in these steps (gated until a later stage, or unused): "
            + ", ".join(report.no_gradient_layers),
        ]
    return "\n".join(lines) + "\n"


def plot(report: ImportanceReport, path: Path, top: int = 30) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.layers[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    ax.barh([r.layer for r in rows], [r.mean_grad_norm for r in rows], color="tab:blue")
    ax.set_xlabel(f"mean gradient L2 norm over {report.steps} steps")
    ax.set_title(f"{report.recipe}: layers by gradient norm")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_report(report: ImportanceReport, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{RESULT}.json", "md": out / f"{RESULT}.md", "png": out / f"{RESULT}.png"}
    write_text(paths["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    write_text(paths["md"], render_table(report))
    plot(report, paths["png"])
    return paths


def analysis_overrides(steps: int, out: Path) -> list[str]:
    return [*ANALYSIS_OVERRIDES, f"training.max_steps={steps}", f"output_dir={out}"]


def measure(ctx: Any, steps: int, progress: bool = True) -> ImportanceReport:
    """Train `ctx` (a `trainers.run.RunContext`) for its max_steps, capturing gradient norms per layer."""
    trainer = ctx.trainer
    args = trainer.args
    # no evaluation, checkpoint or best-model reload: only the steps matter here
    args.eval_strategy = args.save_strategy = "no"
    args.load_best_model_at_end = False
    args.disable_tqdm = True
    capture = GradNormCapture(trainer, steps, progress and trainer.is_world_process_zero())
    trainer.add_callback(capture)
    try:
        trainer.train()
    finally:
        capture.close()
        trainer.evaluator.close()
    if not capture.per_step:
        raise RecipeError("no optimizer step was taken; check training.max_steps and the training data.")
    all_layers = group_order(n for n, _ in trainer.model.named_parameters())
    frozen = [g for g in all_layers if g not in capture.numel]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    source = "deepspeed.utils.safe_get_full_grad" if capture.deepspeed_on else "p.grad"
    return ImportanceReport(
        ctx.recipe.name,
        len(capture.per_step),
        args.world_size,
        source,
        rank_layers(capture.per_step, capture.numel),
        frozen_layers=frozen,
        no_gradient_layers=no_gradient(capture.per_step, capture.numel),
        losses=losses,
    )


def run(
    recipe_path: str,
    overrides: Sequence[str],
    steps: int,
    demo: bool,
    out: Path | None,
    progress: bool = True,
) -> tuple[ImportanceReport, Path]:
    from trainers.distributed import finish_distributed
    from trainers.recipe import load_recipe
    from trainers.run import is_main_process, setup_run

    if steps < 1:
        raise RecipeError(f"--steps must be >= 1, got {steps}.")
    if out is None:
        out = Path(load_recipe(recipe_path, list(overrides), demo=demo).resolved_output_dir() + "-importance")
    if (out / "training_summary.json").is_file() or any((out / "checkpoints").glob("checkpoint-*")):
        raise RecipeError(
            f"--out {out}: holds a training run (training_summary.json or checkpoints/), which the "
            "measurement would overwrite. Pick another --out (default: <output_dir>-importance)."
        )
    extra = [*overrides, *analysis_overrides(steps, out)]
    recipe = load_recipe(recipe_path, extra, demo=demo)
    if recipe.training.precision == "fp16":  # fp16 gradients carry the loss scale until the optimizer step
        raise RecipeError(
            "training.precision=fp16: the gradients read before the step are still loss-scaled. "
            "Measure with training.precision=bf16 or fp32 (the ranking does not need fp16)."
        )
    try:
        report = measure(setup_run(recipe, extra), steps, progress)
        if is_main_process():
            write_report(report, out)
    except BaseException:
        finish_distributed(barrier=False)
        raise
    finish_distributed()
    return report, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.analysis.importance", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", help="a recipe file, e.g. recipes/vit_lora.py")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for launch.py")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to measure (default 20)")
    parser.add_argument("--demo", action="store_true", help="tiny offline model and shipped sample data")
    parser.add_argument("--out", type=Path, help="where the report goes (default: <output_dir>-importance)")
    parser.add_argument("--top", type=int, default=None, help="print only the top N layers")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from trainers.run import is_main_process

    try:
        report, out = run(
            args.recipe, args.overrides, args.steps, args.demo, args.out, progress=not args.quiet
        )
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    if is_main_process():
        print(render_table(report, args.top))
        print(f"wrote {out / RESULT}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
