"""Shared helpers of the dual-encoder tests: a small retrieval recipe on the shipped shape pairs."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT

PAIRS = ROOT / "data" / "shape_pairs"
IMAGES = ROOT / "data" / "shapes" / "images"


def tiny_clip_recipe(output_dir: Path, *, text_layers: int = 2, train: int = 32, val: int = 16, **training):
    """The dual encoder with a tiny ViT and a tiny BERT text tower (MiniLM's tokenizer), dropout 0, no config file."""
    from trainers.models.dual_encoder import (
        EncoderConfigs,
        TextEncoderConfig,
        TinyBertSpec,
        TinyDualEncoderSpec,
    )
    from trainers.models.vit import TinyVitSpec
    from trainers.recipe import Model, ParamGroup, Recipe, Reporting, RetrievalData, RetrievalEval, Training

    settings = dict(
        epochs=2,
        batch_size=8,
        lr=1e-3,
        warmup_steps=0,
        weight_decay=0.01,
        logging_steps=1,
        resume="never",
        lr_scheduler="constant",
        save_total_limit=1,
    )
    settings.update(training)
    spec = TinyDualEncoderSpec(
        vision=TinyVitSpec(
            hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, image_size=32, patch_size=8
        ),
        text=TinyBertSpec(hidden_size=32, num_layers=text_layers, num_heads=2),
    )
    return Recipe(
        name="tiny_clip",
        model=Model(id="tiny", family="dual-encoder", demo=spec, use_demo_model=True),
        data=RetrievalData(
            train=str(PAIRS / "train.json"),
            val=str(PAIRS / "val.json"),
            images=str(IMAGES),
            max_train_samples=train,
            max_val_samples=val,
        ),
        encoder_configs=EncoderConfigs(text=TextEncoderConfig(embed_dim=16, max_length=16)),
        param_groups=[
            ParamGroup("temperature", match=r"^logit_scale$", weight_decay=0.0),
            ParamGroup("text", match=r"^text_model\.", lr_mult=0.5),
        ],
        training=Training(**settings),
        evaluation=RetrievalEval(batch_size=8),
        reporting=Reporting(wandb=False, plots=False),
        output_dir=str(output_dir),
    )


class LayerChanges:
    """A Trainer callback recording, at each epoch end, which parts of the text tower moved since the start.

    `moved[epoch][part]` is the largest absolute change of any of the part's parameters (`embeddings`,
    `layer0`, `layer1`, ...); the model is read inside DDP / DeepSpeed wrappers (ZeRO-2 keeps full weights).
    """

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.start: dict[str, object] = {}
        self.moved: list[dict[str, float]] = []
        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                outer.start = {n: p.detach().clone() for n, p in _core(model).text_model.named_parameters()}

            def on_epoch_end(self, args, state, control, model=None, **kwargs):
                parts: dict[str, float] = {}
                for name, param in _core(model).text_model.named_parameters():
                    part = "embeddings" if name.startswith("embeddings.") else f"layer{name.split('.')[2]}"
                    diff = (param.detach() - outer.start[name]).abs().max().item()
                    parts[part] = max(parts.get(part, 0.0), diff)
                outer.moved.append(parts)

        self.callback = _Callback()


def _core(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def stage_clip_recipe(output_dir: Path, batch_size: int):
    """The multi-rank check: the text tower frozen, a stage thawing its last layer at epoch 1; 2 epochs of
    32 pairs (4 steps an epoch at a global batch of 8), a constant LR so every step counts the same."""
    from trainers.recipe import Freeze, Stage

    recipe = tiny_clip_recipe(output_dir, epochs=2, batch_size=batch_size, train=32, val=12)
    # An attention key bias has a zero gradient in exact arithmetic (softmax ignores a constant per query): its
    # float32 gradient is pure reduction-order noise, which Adam turns into LR-sized steps that differ between
    # 1 and 2 ranks (measured: 9e-6 on ViT's k_proj.bias, every other tensor within 8e-7). It stays frozen here.
    recipe.freeze = [Freeze(regex=r"(?:k_proj|attention\.self\.key)\.bias$")]
    recipe.encoder_configs.text.freeze_layers = -1
    recipe.stages = [Stage(epoch=1, unfreeze="text_model.encoder.layer[-1:]")]
    return recipe


def uneven_gather_check(world_rank: int, world: int) -> dict[str, float]:
    """Inside a 2-rank job: ranks hold 3 and 2 of 5 pairs; the gathered loss equals the 1-process loss of the
    5, and each rank's gradient (summed over the gathered copies, before DDP's 1/world) is world x the
    1-process gradient of its rows. Returns the largest differences."""
    import torch

    from trainers.tasks.retrieval.loss import gather_with_grad, symmetric_infonce

    generator = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    scale = torch.tensor(2.0)
    sizes = [3, 2]
    rows = slice(sum(sizes[:world_rank]), sum(sizes[: world_rank + 1]))
    t, i = text[rows].clone().requires_grad_(), image[rows].clone().requires_grad_()
    loss = symmetric_infonce(gather_with_grad(t), gather_with_grad(i), scale)
    loss.backward()
    full_t, full_i = text.clone().requires_grad_(), image.clone().requires_grad_()
    reference = symmetric_infonce(full_t, full_i, scale)
    reference.backward()
    return {
        "loss_diff": abs(loss.item() - reference.item()),
        "grad_diff": max(
            (t.grad / world - full_t.grad[rows]).abs().max().item(),
            (i.grad / world - full_i.grad[rows]).abs().max().item(),
        ),
        "rows": t.shape[0],
    }
