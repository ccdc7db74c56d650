"""Progressive unfreezing in a real Trainer run: each stage's parameters start changing exactly at its epoch,
frozen parameters never change, and a gated parameter behaves exactly like a frozen one."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from conftest import tiny_recipe
from trainers.recipe import Freeze, Stage, Unfreeze
from trainers.run import complete_run, setup_run

LAYERS = "vision_model.encoder.layers"


class Snapshots(TrainerCallback):
    """Parameter values at the start and at the end of every epoch."""

    def __init__(self, model):
        self.model = model
        self.at_epoch_end: list[dict[str, torch.Tensor]] = []
        self.initial = self._copy()

    def _copy(self):
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def on_epoch_end(self, args, state, control, **kwargs):
        self.at_epoch_end.append(self._copy())


def layer(i: int) -> str:
    return f"{LAYERS}.{i}."


def changed(before: dict, after: dict, prefix: str) -> bool:
    names = [n for n in before if n.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(before[n], after[n]) for n in names)


def staged_recipe(tmp_path, **training):
    recipe = tiny_recipe(tmp_path / "run", epochs=3, lr_scheduler="constant", **training)
    recipe.freeze = [Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")]
    recipe.stages = [Stage(epoch=1, unfreeze=f"{LAYERS}[-2:]"), Stage(epoch=2, unfreeze=f"{LAYERS}[-3:]")]
    return recipe


def test_stages_unfreeze_exactly_the_intended_parameters_at_the_intended_epoch(tmp_path):
    ctx = setup_run(staged_recipe(tmp_path))
    snaps = Snapshots(ctx.prepared.model)
    ctx.trainer.add_callback(snaps)
    summary = complete_run(ctx)

    steps_per_epoch = 4  # 32 samples / batch 8
    assert summary["stages_opened_at_step"] == {"0": steps_per_epoch, "1": 2 * steps_per_epoch}
    e0, e1, e2 = snaps.at_epoch_end
    start = snaps.initial
    # layer 11 trains from the start
    assert changed(start, e0, layer(11))
    # layer 10 (stage 0, epoch 1): untouched in epoch 0, trains from epoch 1
    assert not changed(start, e0, layer(10))
    assert changed(e0, e1, layer(10))
    # layer 9 (stage 1, epoch 2): untouched in epochs 0-1, trains in epoch 2
    assert not changed(start, e1, layer(9))
    assert changed(e1, e2, layer(9))
    # layers 0-8 and the embeddings: frozen throughout, bit-identical
    for i in range(9):
        assert not changed(start, e2, layer(i))
    assert not changed(start, e2, "vision_model.embeddings.")
    assert not changed(start, e2, "vision_model.post_layernorm.")
    # the text decoder trains throughout
    assert changed(start, e0, "text_decoder.")
    # trainable counts move with the stages
    per_layer = sum(p.numel() for n, p in ctx.prepared.model.named_parameters() if n.startswith(layer(11)))
    assert summary["params"]["trainable_at_end"] - summary["params"]["trainable_at_start"] == 2 * per_layer


def test_a_gated_stage_trains_like_a_truly_frozen_block_until_its_epoch(tmp_path):
    """Epoch 0 of the staged run equals a 1-epoch run where the stage layers are really frozen."""
    staged = setup_run(staged_recipe(tmp_path / "a"))
    snaps = Snapshots(staged.prepared.model)
    staged.trainer.add_callback(snaps)
    complete_run(staged)

    frozen = tiny_recipe(tmp_path / "b" / "run", epochs=1, lr_scheduler="constant")
    frozen.freeze = [Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")]
    ctx = setup_run(frozen)
    reference = Snapshots(ctx.prepared.model)
    ctx.trainer.add_callback(reference)
    complete_run(ctx)

    gated_epoch0, frozen_epoch0 = snaps.at_epoch_end[0], reference.at_epoch_end[0]
    worst = max((gated_epoch0[n] - frozen_epoch0[n]).abs().max().item() for n in frozen_epoch0)
    assert worst <= 1e-6, f"gating differs from a true freeze by {worst}"
