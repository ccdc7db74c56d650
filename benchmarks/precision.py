"""bf16 vs fp32: each family's demo, shortened to a few epochs, trained once per precision from the same seed.

Per family: the untrained model's metric (`trainer.evaluate()` before training), the best metric of the short
run, the first and last training losses (mean of 3 logged steps) and the wall time. bf16 here is CPU autocast
(`training.precision=bf16`): the same code path a GPU takes, with CPU kernels. The goal row is the median over
families of best-metric bf16 / fp32 (1.0 = the same quality). These are short runs (a few epochs, one seed):
they show bf16 learns as fp32 does, not the demos' final figures (those are on each model's page).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, Result, Spread, main_for, table
from benchmarks.demo import demo_recipe

# recipe -> overrides of the short run (the first epochs of the demo; data cut where an epoch is long)
SHORT: dict[str, tuple[str, ...]] = {
    "vit_lora": ("training.epochs=3",),
    # the demos' first 160 images / 81 instances: the sets these figures were measured on (the demos now read more)
    "detr_lora": (
        "training.epochs=8",
        "data.max_train_samples=160",
        "training.lr_scheduler=constant",
        "training.warmup_steps=0",
    ),
    "vitpose_lora": ("training.epochs=3", "data.max_train_samples=81"),
    "florence2_lora": ("training.epochs=3",),
    "blip_lora": ("training.epochs=2",),
    "clip_minilm": ("training.epochs=2",),
}
SMOKE = ("training.epochs=1", "data.max_train_samples=32", "data.max_val_samples=8")


def short_run(recipe: str, precision: str, smoke: bool) -> dict[str, Any]:
    from trainers.run import complete_run, setup_run

    overrides = [
        f"training.precision={precision}",
        "training.num_workers=0",
        "training.logging_steps=1",
        *(SMOKE if smoke else SHORT[recipe]),
    ]
    start = time.perf_counter()
    ctx = setup_run(demo_recipe(recipe, overrides))
    metric = ctx.trainer.args.metric_for_best_model.removeprefix("eval_")
    before = ctx.trainer.evaluate()[f"eval_{metric}"]
    summary = complete_run(ctx)
    losses = [e["loss"] for e in ctx.trainer.state.log_history if "loss" in e]
    k = min(3, len(losses))
    return {
        "metric": metric,
        "untrained": float(before),
        "best": float(summary["best_metric"]["value"]),
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "steps": len(losses),
        "seconds": time.perf_counter() - start,
        "overrides": overrides,
    }


def run(smoke: bool, out: Path) -> Result:
    """bf16 vs fp32: each family's demo, a few epochs per precision."""
    recipes = ("vit_lora",) if smoke else tuple(SHORT)
    rows: dict[str, dict[str, Any]] = {}
    for recipe in recipes:
        rows[recipe] = {p: short_run(recipe, p, smoke) for p in ("fp32", "bf16")}
        print(recipe, rows[recipe], flush=True)
    ratios = [
        r["bf16"]["best"] / r["fp32"]["best"] if r["fp32"]["best"] else 1.0 + r["bf16"]["best"]
        for r in rows.values()
    ]
    md = table(
        [
            "recipe",
            "metric",
            "untrained",
            "fp32 best",
            "bf16 best",
            "fp32 loss first → last",
            "bf16 loss first → last",
            "s fp32 / bf16",
        ],
        [
            [
                recipe,
                r["fp32"]["metric"],
                f"{r['fp32']['untrained']:.3f}",
                f"{r['fp32']['best']:.3f}",
                f"{r['bf16']['best']:.3f}",
                f"{r['fp32']['loss_first']:.3f} → {r['fp32']['loss_last']:.3f}",
                f"{r['bf16']['loss_first']:.3f} → {r['bf16']['loss_last']:.3f}",
                f"{r['fp32']['seconds']:.0f} / {r['bf16']['seconds']:.0f}",
            ]
            for recipe, r in rows.items()
        ],
    )
    md += (
        "\n\nOne seed, one run per precision; bf16 is CPU autocast. The runs: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in SHORT.items())
        + " (the rest is the demo's)."
    )
    goals = [Goal("best metric bf16 / fp32 (median over families)", Spread.of(ratios), 0.9, "at_least")]
    return Result("precision", "bf16 vs fp32 on each family's demo", smoke, goals, rows, md)


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
