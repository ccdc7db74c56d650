"""Data pipeline: samples/s of each recipe's training dataset + collator (its own num_workers) vs the model step.

Loader: a `DataLoader` over the demo run's training set with its collator, batch size and `num_workers`,
as the Trainer builds it, timed over a few batches after the first. Model: forward + backward + AdamW step of
the demo run's model on one batch already in memory. Interleaved, round by round. The ratio is loader
samples/s over model samples/s: above 1 the data is produced faster than it is consumed. With
`num_workers = 0` (every demo) loading runs in the training process, between steps, so the step always waits
for it: the share of the step spent loading is reported as well.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, Result, Spread, interleaved, main_for, paired_ratios, table
from benchmarks.demo import RECIPES, demo_context
from benchmarks.shipped_recipes import one_per_family

KEYS = one_per_family(RECIPES.values())  # one demo recipe per model family


def measure(key: str, rounds: int, batches: int) -> dict[str, Any]:
    ctx = demo_context(key)
    trainer = ctx.trainer
    loader = trainer.get_train_dataloader()
    batch_size = trainer.args.per_device_train_batch_size
    model = trainer.model
    model.train()
    optimizer = trainer.create_optimizer()
    batch = next(iter(loader))

    def load() -> float:
        it = iter(loader)
        next(it)  # the first batch pays for starting the iterator (workers), not steady state
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch_size / (time.perf_counter() - start)

    def step() -> float:
        start = time.perf_counter()
        for _ in range(max(1, batches // 2)):
            trainer.compute_loss(model, dict(batch)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return max(1, batches // 2) * batch_size / (time.perf_counter() - start)

    rates = interleaved({"loader": load, "model": step}, rounds)
    ratio = paired_ratios(rates["loader"], rates["model"])
    share = Spread.of([m / (m + lo) for lo, m in zip(rates["loader"], rates["model"], strict=True)])
    return {
        "recipe": key,
        "num_workers": trainer.args.dataloader_num_workers,
        "batch_size": batch_size,
        "samples_per_s": {k: Spread.of(v) for k, v in rates.items()},
        "loader_vs_model": ratio,
        "loading_share_of_step": share,
    }


def run(smoke: bool, out: Path) -> Result:
    """Data pipeline: dataset + collator samples/s at the recipe's num_workers vs the model's step."""
    keys, rounds, batches = (("vit_lora",), 2, 2) if smoke else (KEYS, 5, 6)
    rows = [measure(k, rounds, batches) for k in keys]
    goals = [
        Goal(f"{r['recipe']}: loader samples/s / model samples/s", r["loader_vs_model"], 1.0, "at_least")
        for r in rows
    ]
    md = table(
        [
            "recipe",
            "num_workers",
            "batch",
            "loader samples/s",
            "model samples/s",
            "loader / model",
            "share of step spent loading (workers=0)",
            "step waits for data?",
        ],
        [
            [
                r["recipe"],
                r["num_workers"],
                r["batch_size"],
                r["samples_per_s"]["loader"].median,
                r["samples_per_s"]["model"].median,
                r["loader_vs_model"].text(),
                f"{r['loading_share_of_step'].median:.1%}" if r["num_workers"] == 0 else "—",
                ("yes, serially" if r["num_workers"] == 0 else "no")
                if r["loader_vs_model"].median >= 1
                else "yes: the loader is slower than the model",
            ]
            for r in rows
        ],
    )
    md += (
        "\n\nWith num_workers = 0 the loader runs between steps, so its time adds to every step even when it "
        "is faster than the model; `training.num_workers` moves it into background processes."
    )
    return Result("data_pipeline", "5. Data pipeline vs model step", smoke, goals, {"recipes": rows}, md)


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
