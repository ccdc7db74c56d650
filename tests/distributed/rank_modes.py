"""The modes of the multi-rank LoRA job, derived from `recipes/`: every shipped recipe with a demo runs on 2 ranks
and on 1 rank with the same global batch, shortened by one generic rule, under the engines its family's rule
names. A new recipe or a new family's recipe gets the generic rule; nothing here names it.

The generic rule (`RankRule()`): the recipe's `--demo`, 2 epochs of 64 training samples at a global batch of 16
(2 ranks x 8 = 1 rank x 16), LoRA dropout 0 (masks would differ across ranks), a log line per step, one
checkpoint kept, no plots, under DDP and ZeRO-2.

`FAMILY_RULES` holds the declared exceptions, keyed by family id (matched through the family registry, so a
recipe spelling the old id finds its family's rule), each with why. Besides the recipe modes, the job runs the
harness's own feature checks (`FEATURE_MODES`): the BLIP LoRA recipe of `lora_recipe.py` (modules_to_save, a
freeze rule, a stage, a param group; ZeRO-3 adapter reload; with gradient checkpointing under ZeRO-3), the dual
encoder's cross-rank loss with a stage, the layer-importance gradients, a weighted two-source training mix
(`mix-ddp`), the ViT recipe in bf16 under ZeRO-2 (`vit_lora-bf16-zero2`), and the ViT recipe with 2 loader workers per rank,
straight and stopped after epoch 1 then resumed (`vit_lora-workers-ddp`, `vit_lora-workers-resume-ddp`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.shipped_recipes import ShippedRecipe, keyed_by_family, shipped_demo_recipes
from trainers.paths import DATA_DIR, RECIPES_DIR

ENGINES = ("ddp", "zero2", "zero3")
ALL_ENGINES = (*ENGINES, "fsdp")  # FSDP2 through accelerate (launch.engine=fsdp)


def one_object_images(path: Path, n: int = 64) -> Path:
    """The first `n` shipped tiny_boxes training images holding exactly one shape, as a COCO JSON.

    DETR's class loss is a weighted mean over each rank's queries, weighted by how many of them matched an
    object; with one object per image every rank's weights sum alike, so 2 ranks x 8 images average to
    exactly the loss of 16 images on one rank (the box losses are normalised by the global box count
    inside transformers already).
    """
    coco = json.loads((DATA_DIR / "tiny_boxes" / "train.json").read_text())
    counts: dict[int, int] = {}
    for ann in coco["annotations"]:
        counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    images = [im for im in coco["images"] if counts.get(im["id"]) == 1][:n]
    keep = {im["id"] for im in images}
    annotations = [a for a in coco["annotations"] if a["image_id"] in keep]
    path.write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    return path


@dataclass(frozen=True)
class RankRule:
    """How a family's demo recipes are shortened and run for the 2-rank vs 1-rank comparison."""

    engines: tuple[str, ...] = ("ddp", "zero2")
    epochs: int = 2
    train_samples: int = 64  # data.max_train_samples, or the size of `train_set`'s file
    global_batch: int = 16  # the 1-rank batch; each of 2 ranks takes half
    lr: float | None = None  # None: the demo's
    recipes: tuple[str, ...] | None = None  # which of the family's demo recipes run; None: all of them
    # writes a training set where exact rank invariance needs one (`path, n` → path); None: the demo's own
    train_set: Callable[[Path, int], Path] | None = None
    overrides: tuple[str, ...] = ()  # further recipe overrides, applied last
    why: str = ""  # what the exception is for (empty for the generic rule)


GENERIC = RankRule()

# The chat families' shortening (the fields of their RankRule); each family's entry adds its engines and why.
CHAT: dict[str, Any] = dict(
    epochs=2,
    lr=5e-4,
    train_samples=32,
    global_batch=8,
    overrides=(
        "data.max_val_samples=8",
        "evaluation.max_new_tokens=2",
        "evaluation.batch_size=4",
        "training.warmup_steps=0",
        "early_stopping=none",
    ),
)
CHAT_WHY = (
    "a chat VLM generates at every evaluation: 2 epochs of 32 conversations at a global batch of 8, 8 val "
    "conversations answered in 2 new tokens (ZeRO-3: synced_gpus). The loss is the mean over the step's assistant "
    "tokens on all ranks, so conversations of different lengths compare exactly. lr 5e-4, not the demo's 3e-3: "
    "at 3e-3 Adam turned ZeRO-3's float32 reduction-order noise in the fully trained embedding's near-zero "
    "gradient rows into a 7.9e-6 weight difference (Qwen2-VL), past the 5e-6 tolerance"
)

FAMILY_RULES: dict[str, RankRule] = {
    "vit": RankRule(
        engines=ALL_ENGINES,
        recipes=("vit_lora",),
        why="the cheapest family carries a shipped recipe through ZeRO-3 and FSDP2 too (sharded adapter, "
        "gathered save). vit_layer_decay (a full fine-tune at the demo's lr 3e-3) is left out: under ZeRO-2 its "
        "weights drifted 5.5e-6 from 1 rank (float32 reduction order, scaled by the lr), past the 5e-6 tolerance; "
        "its per-layer rates are checked in tests/test_layer_decay.py",
    ),
    "detr": RankRule(
        lr=5e-4,
        train_set=one_object_images,
        why="DETR's class loss is a mean weighted by each rank's matched queries: only one-object images make "
        "2 ranks x 8 average to the 1-rank loss of 16. lr 5e-4 instead of the demo's 5e-3: Adam turns float32 "
        "reduction-order noise in near-zero gradients into steps of ~lr (2.7e-5 weight difference at 5e-3).",
    ),
    "vitpose": RankRule(
        lr=5e-4,
        why="at the demo's lr 5e-3 float32 reduction-order noise grew into weight differences that moved a "
        "decoded keypoint by up to 1.3 px (an argmax between two near-equal heatmap pixels)",
    ),
    "florence2": RankRule(
        engines=("zero2",),
        epochs=1,
        train_samples=32,  # the first 32 fabric lines in curriculum order: 4 steps at a global batch of 8
        global_batch=8,
        recipes=("florence2_lora", "florence2_omniparser_freeze"),
        overrides=(
            "data.max_val_samples=6",
            "training.warmup_steps=0",
            "evaluation.max_new_tokens=12",
            "evaluation.batch_size=3",
            "early_stopping=none",
        ),
        why="the slowest family (generation at every evaluation): ZeRO-2 only, 1 epoch of 32 lines, 6 val lines "
        "with short generations; the hybrid recipe is the union of the LoRA and keyword-freeze ones, both run",
    ),
    "blip": RankRule(
        recipes=(),
        why="the caption loss is normalised by the step's global token count; BLIP runs as the feature check "
        "`lora_recipe` on captions of one token length (`same_length_captions`), under DDP and ZeRO-2/3",
    ),
    "qwen2-vl": RankRule(engines=ENGINES, **CHAT, why=CHAT_WHY),
    "paligemma": RankRule(
        engines=("zero3",),
        **CHAT,
        why=CHAT_WHY
        + "; PaliGemma under ZeRO-3 only (the engine that reloads the model and processor, and gathers "
        "for generation): its LoRA path under DDP and ZeRO-2 is Qwen2-VL's, and each mode costs ~5 s of CI",
    ),
    "smolvlm": RankRule(
        engines=ENGINES,
        **{**CHAT, "epochs": 5, "train_samples": 16},
        why=CHAT_WHY
        + "; the progressive recipe runs 5 epochs of 16 so both its vision stages (epochs 2 and 4) "
        "open inside the run",
    ),
    "dual-encoder": RankRule(
        recipes=(),
        why="clip_minilm's demo loads the real MiniLM text tower; the tiny dual encoder with a text-tower stage "
        "(`clip_helpers.stage_clip_recipe`) checks the cross-rank contrastive loss instead",
    ),
}


def rule_for(family: str) -> RankRule:
    """The family's declared exception, or the generic rule."""
    return keyed_by_family(FAMILY_RULES, family, GENERIC)


@dataclass(frozen=True)
class RankMode:
    """One run of the job: a shipped recipe (or a feature check) under one engine."""

    name: str  # the worker's argument and the run's output folder
    engine: str  # ddp | zero2 | zero3 | fsdp
    recipe: str  # the shipped recipe's name, or the feature check's
    rule: RankRule = field(default=GENERIC, compare=False)
    overrides: tuple[str, ...] = ()  # a feature check's further overrides of a shipped recipe's run


def recipe_modes(recipes_dir: Path = RECIPES_DIR) -> dict[str, RankMode]:
    """`<recipe>-<engine>` for every demo recipe of `recipes_dir` its family's rule runs."""
    modes: dict[str, RankMode] = {}
    for recipe in shipped_demo_recipes(recipes_dir).values():
        rule = rule_for(recipe.family)
        if rule.recipes is not None and recipe.name not in rule.recipes:
            continue
        for engine in rule.engines:
            modes[f"{recipe.name}-{engine}"] = RankMode(f"{recipe.name}-{engine}", engine, recipe.name, rule)
    return modes


def uncovered_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Demo recipes that neither run nor are left out by a rule that says why."""
    running = {mode.recipe for mode in recipe_modes(recipes_dir).values()}
    return [
        name
        for name, recipe in shipped_demo_recipes(recipes_dir).items()
        if name not in running and not rule_for(recipe.family).why
    ]


BF16 = ("training.precision=bf16",)
WORKERS = ("training.num_workers=2",)

# The harness's own checks of features rather than recipes; `clip-local-ddp` (per-rank negatives only) is run
# by hand for the README's comparison, not in the job.
FEATURE_MODES: dict[str, RankMode] = {
    **{engine: RankMode(engine, engine, "blip-features") for engine in ENGINES},
    **{f"clip-{engine}": RankMode(f"clip-{engine}", engine, "clip-stage") for engine in ("ddp", "zero2")},
    "clip-local-ddp": RankMode("clip-local-ddp", "ddp", "clip-stage-local"),
    # FSDP2 refuses stages: the BLIP LoRA feature recipe without its stage, and the same interrupted + resumed
    **{name: RankMode(name, "fsdp", name) for name in ("blip-fsdp", "blip-resume-fsdp")},
    **{f"importance-{engine}": RankMode(f"importance-{engine}", engine, "importance") for engine in ENGINES},
    # the BLIP feature check with gradient checkpointing (frozen tower, LoRA, a stage) under DDP and ZeRO-3 (the
    # combination reported broken upstream), compared with the 1-rank run without it
    **{
        f"checkpointing-{engine}": RankMode(f"checkpointing-{engine}", engine, "blip-features-checkpointing")
        for engine in ("ddp", "zero3")
    },
    "mix-ddp": RankMode("mix-ddp", "ddp", "blip-mix"),  # the BLIP LoRA check on a weighted two-source mix
    # bf16 (CPU autocast; DeepSpeed keeps bf16 weights with fp32 master copies): the ViT recipe's run under ZeRO-2
    # against its 1-rank bf16 run, within the bf16 tolerance of test_lora_distributed.py
    "vit_lora-bf16-zero2": RankMode("vit_lora-bf16-zero2", "zero2", "vit_lora", overrides=BF16),
    # loader workers in a real run: the ViT recipe (seeded crop and flip per epoch) with 2 persistent workers per
    # rank against its `vit_lora-ddp` run (0 workers), and the same stopped after epoch 1 and resumed
    **{
        name: RankMode(name, "ddp", "vit_lora", overrides=WORKERS)
        for name in ("vit_lora-workers-ddp", "vit_lora-workers-resume-ddp")
    },
}
WORKER_MODES = ("vit_lora-workers-ddp", "vit_lora-workers-resume-ddp")
RESUMED_MODES = ("blip-resume-fsdp", "vit_lora-workers-resume-ddp")  # stopped after epoch 1, then resumed
CLIP_CHECKS = ("clip-stage", "clip-stage-local")
FSDP_CHECKS = ("blip-fsdp", "blip-resume-fsdp")
JOB_FEATURE_MODES = tuple(name for name in FEATURE_MODES if name != "clip-local-ddp")


def all_modes() -> dict[str, RankMode]:
    return {**FEATURE_MODES, **recipe_modes()}


def train_set_path(data_dir: Path, recipe: str) -> Path:
    return data_dir / f"{recipe}_train.json"


def write_train_sets(data_dir: Path, modes: dict[str, RankMode]) -> None:
    """The special training sets the modes' rules declare, written once before the job (ranks read them)."""
    for mode in modes.values():
        if mode.rule.train_set is not None:
            mode.rule.train_set(train_set_path(data_dir, mode.recipe), mode.rule.train_samples)


def shipped(recipe: str) -> ShippedRecipe:
    return shipped_demo_recipes()[recipe]


def rank_recipe(
    recipe: str, output_dir: Path, ranks: int, data_dir: Path, overrides: tuple[str, ...] = ()
) -> Any:
    """`recipes/<recipe>.py --demo` shortened by its family's rule for `ranks` ranks (1 or 2), then `overrides`."""
    from trainers.recipe import load_recipe

    found = shipped(recipe)
    rule = rule_for(found.family)
    data = (
        f"data.train={train_set_path(data_dir, recipe)}"
        if rule.train_set is not None
        else f"data.max_train_samples={rule.train_samples}"
    )
    loaded = load_recipe(
        str(found.path),
        [
            f"output_dir={output_dir}",
            f"training.batch_size={rule.global_batch // ranks}",
            f"training.epochs={rule.epochs}",
            data,
            *([f"training.lr={rule.lr}"] if rule.lr is not None else []),
            "training.logging_steps=1",
            "training.resume=never",
            "training.save_total_limit=1",
            "reporting.plots=false",
            *rule.overrides,
            *overrides,
        ],
        demo=True,
    )
    if loaded.lora is not None:
        loaded.lora = dataclasses.replace(loaded.lora, dropout=0.0)
    return loaded
