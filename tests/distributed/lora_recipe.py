"""The BLIP LoRA recipe of the multi-rank tests' feature check: adapters, a declared modules_to_save, a module
trained through a freeze rule and a progressive-unfreezing stage, dropout 0 (masks would repeat across ranks).
The shipped recipes' modes are derived in rank_modes.py.

`same_length_captions` writes a training set whose captions all have one token count, so these runs compare
LoRA across ranks and ZeRO stages alone; captions of different lengths across ranks are covered by
test_ragged_captions.py (the loss is normalised by the step's global token count).
"""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_recipe
from trainers.recipe import Lora, ParamGroup, Stage, Unfreeze


def lora_recipe(output_dir: Path, batch_size: int, train_json: Path, stage: bool = True):
    """`stage=False`: the same without its stage (FSDP2 refuses stages)."""
    recipe = tiny_recipe(
        output_dir,
        epochs=2,
        batch_size=batch_size,
        lr=5e-3,
        lr_scheduler="constant",
        logging_steps=1,
        save_total_limit=1,
    )
    recipe.lora = Lora(
        target_modules=("query", "value"),
        r=4,
        dropout=0.0,
        modules_to_save=("text_decoder.cls.predictions.transform",),
    )
    recipe.freeze = [Unfreeze("vision_model.post_layernorm")]
    recipe.stages = [Stage(epoch=1, unfreeze="vision_model.encoder.layers[-1:]")] if stage else []
    recipe.param_groups = [ParamGroup("lora", match=r"lora_", lr_mult=2.0)]
    recipe.data.train = str(train_json)
    recipe.data.max_train_samples = 32
    recipe.data.max_val_samples = 4
    return recipe


def mix_recipe(output_dir: Path, batch_size: int, train_json: Path):
    """The LoRA check's recipe on a weighted mix of two sources: its training captions (weight 3) and the
    shipped validation captions of the same token length (weight 1); 24 positions an epoch (16 + 8)."""
    import json

    from conftest import SHAPES
    from trainers.models.blip import build_blip_tokenizer
    from trainers.recipe import MixSource

    recipe = lora_recipe(output_dir, batch_size, train_json)
    tokenizer = build_blip_tokenizer()
    length = len(tokenizer(next(iter(json.loads(train_json.read_text()).values())))["input_ids"])
    val = json.loads((SHAPES / "val.json").read_text())
    same = {k: v for k, v in val.items() if isinstance(v, str) and len(tokenizer(v)["input_ids"]) == length}
    second = train_json.with_name("mix_second.json")
    second.write_text(json.dumps(dict(list(same.items())[:8])))
    recipe.data.images = str(SHAPES / "images")
    recipe.data.max_train_samples = 16
    recipe.data.train = [
        MixSource(str(train_json), 3.0, name="train"),
        MixSource(str(second), 1.0, name="val"),
    ]
    return recipe


def importance_recipe(output_dir: Path, batch_size: int, steps: int = 3):
    """`recipes/vit_lora.py --demo` fully fine-tuned, set up for 3 steps of layer importance."""
    from conftest import ROOT
    from trainers.analysis.importance import analysis_overrides
    from trainers.recipe import load_recipe

    return load_recipe(
        str(ROOT / "recipes" / "vit_lora.py"),
        [
            "lora=none",
            "data.max_train_samples=32",
            f"training.batch_size={batch_size}",
            *analysis_overrides(steps, output_dir),
        ],
        demo=True,
    )


def same_length_captions(path: Path, n: int = 32) -> Path:
    """The first `n` shipped training captions that tokenize to the most common length."""
    import json
    from collections import Counter

    from conftest import SHAPES
    from trainers.models.blip import build_blip_tokenizer

    tokenizer = build_blip_tokenizer()
    captions = json.loads((SHAPES / "train.json").read_text())
    lengths = {k: len(tokenizer(v)["input_ids"]) for k, v in captions.items()}
    common = Counter(lengths.values()).most_common(1)[0][0]
    chosen = {k: v for k, v in captions.items() if lengths[k] == common}
    path.write_text(json.dumps(dict(list(chosen.items())[:n])))
    return path
