"""Trainer optimizers other than AdamW with the recipe's parameter groups and gated stages: fused AdamW and
bitsandbytes' 8-bit AdamW (bitsandbytes 0.50 runs it on CPU) get the declared group LRs and weight decay,
never move a frozen parameter, keep a gated stage still until its epoch and train it after."""

from __future__ import annotations

import pytest
import torch
from test_progressive_unfreezing import LAYERS, Snapshots, changed, layer

from conftest import tiny_recipe
from trainers.recipe import Freeze, ParamGroup, Stage, Unfreeze
from trainers.run import complete_run, setup_run

OPTIMIZERS = {  # optim -> (optimizer class module, defaults it must carry)
    "adamw_torch_fused": ("torch.optim", {"fused": True}),
    "adamw_bnb_8bit": ("bitsandbytes.optim", {}),
}


def grouped_staged_recipe(tmp_path, optim: str):
    recipe = tiny_recipe(tmp_path / "run", epochs=2, lr=1e-3, lr_scheduler="constant", optim=optim)
    recipe.freeze = [Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")]
    recipe.stages = [Stage(epoch=1, unfreeze=f"{LAYERS}[-2:]", lr_mult=0.5)]
    recipe.param_groups = [ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1)]
    return recipe


@pytest.mark.parametrize("optim", list(OPTIMIZERS))
def test_groups_and_gated_stages_work_with_the_optimizer(tmp_path, optim, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ctx = setup_run(grouped_staged_recipe(tmp_path, optim))
    optimizer = ctx.trainer.create_optimizer()
    module, defaults = OPTIMIZERS[optim]
    assert type(optimizer).__name__ == "AdamW" and type(optimizer).__module__.startswith(module)
    assert all(optimizer.defaults.get(k) == v for k, v in defaults.items())
    planned = {g.name: g for g in ctx.prepared.groups}
    assert [g["name"] for g in optimizer.param_groups] == list(planned)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(planned[group["name"]].lr)
        assert group["weight_decay"] == planned[group["name"]].initial_weight_decay
    by_name = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert by_name["vision/decay"] == pytest.approx(1e-4) and by_name["vision/stage0/decay"] == pytest.approx(
        5e-4
    )

    snaps = Snapshots(ctx.prepared.model)
    ctx.trainer.add_callback(snaps)
    complete_run(ctx)
    e0, e1 = snaps.at_epoch_end
    start = snaps.initial
    assert changed(start, e0, layer(11)) and changed(start, e0, "text_decoder.")  # trains from the start
    assert not changed(start, e0, layer(10)) and changed(e0, e1, layer(10))  # the gated stage, from epoch 1
    for i in range(10):  # frozen throughout
        assert not changed(start, e1, layer(i))
    assert not changed(start, e1, "vision_model.embeddings.")
    assert torch.isfinite(torch.tensor(ctx.trainer.state.log_history[-1]["train_loss"]))
    if optim == "adamw_bnb_8bit":  # the moments really are 8-bit for tensors of 4096 elements and more
        state = [s for s in optimizer.state.values() if "state1" in s]
        assert any(s["state1"].dtype == torch.uint8 for s in state)
