"""Evaluation speed (images/s): our full evaluation vs a per-image `generate` loop vs bare batched `generate`.

Ours is the run's `ShardedEvaluator` on the same model: data loading and collation, the task's `predict`
(generation and decoding, or the forward pass and post-processing), gathering and the task's `score` (the
metrics). Bare batched is `model.generate` (or the forward pass) over the same loader with the same
generation settings and nothing else: no decoding, no metrics. The per-image loop collates one image at a
time and decodes it, as a hand-written evaluation script often does. Batch sizes 8, 32 and 64 are swept;
each round measures the three side by side in alternating order. One unmeasured evaluation first: it builds
the metric scorers and the task's once-per-set baselines, which are not part of the steady state.

Generative tasks: captioning (BLIP) and Florence-2 on a subset of their training images (the demos' val sets
are smaller than the largest batch). Forward-only tasks (classification, detection, retrieval): ours against
the bare batched forward only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks.common import Goal, Result, Spread, interleaved, main_for, paired_ratios, table, timed
from benchmarks.demo import demo_context, scratch
from trainers.data.loader import resolve_num_workers
from trainers.evaluation import ShardedEvaluator, _float_dtype, _to_device


def _subset_json(src: str, n: int) -> str:
    """The first n entries of a `{filename: caption}` file, in a scratch file."""
    items = list(json.loads(Path(src).read_text()).items())[:n]
    path = scratch("captions") / "subset.json"
    path.write_text(json.dumps(dict(items)))
    return str(path)


def _subset_jsonl(src: str, n: int) -> str:
    lines = Path(src).read_text().splitlines()[:n]
    path = scratch("florence") / "subset.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _caption_generate(ctx: Any) -> Callable[[Any, dict], Any]:
    from trainers.tasks.captioning.scoring import generation_kwargs

    kwargs = generation_kwargs(ctx.task.settings)
    return lambda model, batch: model.generate(pixel_values=batch["pixel_values"], **kwargs)


def _florence_generate(ctx: Any) -> Callable[[Any, dict], Any]:
    e = ctx.task.evaluation
    return lambda model, batch: model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values=batch["pixel_values"],
        num_beams=e.num_beams,
        do_sample=False,
        max_new_tokens=e.max_new_tokens,
    )


def _decode(ctx: Any) -> Callable[[Any], list[str]]:
    processor = ctx.prepared.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    return lambda ids: tokenizer.batch_decode(ids, skip_special_tokens=True)


def _forward(inputs: tuple[str, ...]) -> Callable[[Any, dict], Any]:
    return lambda model, batch: model(**{k: batch[k] for k in inputs if k in batch})


# key: (recipe overrides for n images, bare call, generative)
def _setup(key: str, n: int) -> tuple[Any, Callable[[Any, dict], Any], bool]:
    if key == "blip_progressive":
        ctx = demo_context(key, [f"data.val={_subset_json('data/shapes/train.json', n)}"])
        return ctx, _caption_generate(ctx), True
    if key == "florence2_lora":
        ctx = demo_context(
            key,
            [
                f"data.val={_subset_jsonl('data/fabric/train.jsonl', n)}",
                "data.val_images=data/fabric/train/JPEGImages",
            ],
        )
        return ctx, _florence_generate(ctx), True
    # the training images as the eval set (more than the largest batch); the dual encoder's 48 val pairs with the
    # real MiniLM text tower already take seconds per evaluation
    ctx = demo_context(key, [] if key == "clip_minilm" else [f"data.val={_train_path(key)}"])
    inputs = {"vit_lora": ("pixel_values",), "detr_lora": ("pixel_values", "pixel_mask")}.get(key)
    if inputs is None:
        from trainers.tasks.retrieval.task import MODEL_INPUTS

        inputs = tuple(MODEL_INPUTS)
    return ctx, _forward(inputs), False


def _train_path(key: str) -> str:
    from benchmarks.demo import demo_recipe

    return demo_recipe(key).data.train


class Candidates:
    """The three ways to evaluate one set with one model, each returning its wall seconds."""

    def __init__(self, ctx: Any, bare: Callable[[Any, dict], Any], batch_size: int) -> None:
        self.ctx, self.bare_call, self.batch_size = ctx, bare, batch_size
        self.model = ctx.trainer.model
        self.model.eval()
        self.dataset = ctx.data.val
        self.collator = ctx.data.eval_collator
        self.dtype = _float_dtype(self.model)
        self.evaluator = ShardedEvaluator(
            ctx.task,
            self.dataset,
            self.collator,
            batch_size,
            num_workers=resolve_num_workers(ctx.recipe.training.num_workers, torch.cuda.is_available()),
        )
        self.decode = _decode(ctx)

    def ours(self) -> float:
        return timed(lambda: self.evaluator.run(self.model))

    @torch.no_grad()
    def _bare(self) -> None:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collator,
            num_workers=resolve_num_workers(self.ctx.recipe.training.num_workers, torch.cuda.is_available()),
        )
        for batch in loader:
            self.bare_call(self.model, _to_device(batch, "cpu", self.dtype))

    def bare(self) -> float:
        return timed(self._bare)

    @torch.no_grad()
    def _per_image(self) -> None:
        for i in range(len(self.dataset)):
            batch = _to_device(self.collator([self.dataset[i]]), "cpu", self.dtype)
            self.decode(self.bare_call(self.model, batch))

    def per_image(self) -> float:
        return timed(self._per_image)


def measure(key: str, n: int, batch_sizes: tuple[int, ...], rounds: int) -> dict[str, Any]:
    ctx, bare, generative = _setup(key, n)
    n_images = len(ctx.data.val)
    rows = []
    for bs in batch_sizes:
        c = Candidates(ctx, bare, bs)
        c.evaluator.run(c.model)  # unmeasured: scorers and once-per-set baselines are built here
        fns = {"ours": c.ours, "bare_batched": c.bare}
        if generative:
            fns["per_image"] = c.per_image
        seconds = interleaved(fns, rounds)
        row = {
            "batch_size": bs,
            "images": n_images,
            "images_per_s": {k: Spread.of([n_images / s for s in v]) for k, v in seconds.items()},
            "ours_vs_bare": paired_ratios(seconds["bare_batched"], seconds["ours"]),
        }  # rate ratio
        if generative:
            row["ours_vs_per_image"] = paired_ratios(seconds["per_image"], seconds["ours"])
        rows.append(row)
    return {"recipe": key, "task": ctx.task.name, "generative": generative, "rows": rows}


def run(smoke: bool, out: Path) -> Result:
    """Evaluation speed: ours vs per-image generate loop vs bare batched generate / forward, images/s."""
    # each recipe with its task's bare baseline (a generate loop or a forward call) written above
    keys = (
        ("florence2_lora", "vit_lora")
        if smoke
        else ("blip_progressive", "florence2_lora", "vit_lora", "detr_lora", "clip_minilm")
    )
    batch_sizes, rounds, n = ((8,), 1, 8) if smoke else ((8, 32, 64), 2, 64)
    results = [measure(k, n if k != "florence2_lora" else n // 2, batch_sizes, rounds) for k in keys]
    goals: list[Goal] = []
    rows = []
    for r in results:
        for row in r["rows"]:
            tag = f"{r['recipe']} bs {row['batch_size']}"
            goals.append(
                Goal(f"{tag}: ours / bare batched (images/s)", row["ours_vs_bare"], 0.95, "at_least")
            )
            if r["generative"]:
                goals.append(
                    Goal(
                        f"{tag}: ours / per-image loop (images/s)", row["ours_vs_per_image"], 1.0, "at_least"
                    )
                )
            ips = row["images_per_s"]
            rows.append(
                [
                    r["recipe"],
                    r["task"],
                    row["batch_size"],
                    row["images"],
                    ips["ours"].median,
                    ips["bare_batched"].median,
                    ips["per_image"].median if "per_image" in ips else "—",
                    row["ours_vs_bare"].text(),
                    row["ours_vs_per_image"].text() if r["generative"] else "—",
                ]
            )
    md = table(
        [
            "recipe",
            "task",
            "batch",
            "images",
            "ours img/s",
            "bare img/s",
            "per-image img/s",
            "ours / bare",
            "ours / per-image",
        ],
        rows,
    )
    return Result("eval_speed", "2. Evaluation speed", smoke, goals, {"recipes": results}, md)


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
