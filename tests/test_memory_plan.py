"""The dry-run's memory figures: the model-state part equals the bytes a real optimizer step leaves behind
(params, grads, AdamW state) for a freeze + stage config, LoRA and 4-bit QLoRA; ZeRO divides the parts the
stage shards; the measured activations grow linearly with the batch; `--dry-run` prints them."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from trainers.recipe import load_recipe
from trainers.reporting.memory_plan import memory_plan, unique_parameters

TINY = ROOT / "tests" / "distributed" / "tiny_recipe.py"
VIT_LORA = ROOT / "recipes" / "vit_lora.py"
CONFIGS = {
    "freeze+stage (BLIP)": (TINY, []),
    "lora (ViT)": (VIT_LORA, []),
    "qlora 4bit (ViT)": (VIT_LORA, ["model.quantization=4bit"]),
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def one_step_bytes(trainer) -> dict[str, int]:
    """Params, grads and optimizer-state bytes after one step of the run's own optimizer on a real batch."""
    model = trainer.model
    optimizer = trainer.create_optimizer()  # the run's param groups, torch AdamW (training.optim=adamw_torch)
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.compute_loss(model, batch).backward()
    optimizer.step()
    params = unique_parameters(model)
    return {
        "params": sum(p.nbytes for p in params),
        "grads": sum(p.grad.nbytes for p in params if p.grad is not None),
        "optimizer": sum(
            t.nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)
        ),
    }


@pytest.mark.parametrize("config", list(CONFIGS))
def test_model_state_bytes_equal_a_real_step(tmp_path, config):
    from trainers.run import setup_run

    path, extra = CONFIGS[config]
    recipe = load_recipe(
        path,
        [
            *extra,
            "training.epochs=1",
            "reporting.wandb=false",
            "reporting.plots=false",
            f"output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    ctx = setup_run(recipe)
    predicted = memory_plan(recipe, ctx.prepared).state
    measured = one_step_bytes(ctx.trainer)
    print(
        f"{config}: predicted params/grads/optimizer {predicted.params}/{predicted.grads}/{predicted.optimizer} B, "
        f"measured {measured}"
    )
    assert (predicted.params, predicted.grads, predicted.optimizer) == (
        measured["params"],
        measured["grads"],
        measured["optimizer"],
    )
    assert 0 < predicted.grads < predicted.params or config.startswith("freeze")


def test_zero_stages_divide_what_they_shard_and_dry_run_prints_them(capsys):
    import launch

    recipe = load_recipe(TINY, ["launch.launcher=torchrun", "launch.nproc=2", "launch.zero=2"], demo=True)
    from trainers.plan import load_model, prepare_model

    prepared = prepare_model(*load_model(recipe), recipe)
    plan = memory_plan(recipe, prepared)
    s, ddp = plan.state, plan.per_device(None)
    assert (ddp["params"], ddp["grads"], ddp["optimizer"]) == (s.params, s.grads, s.optimizer)
    assert plan.per_device(1)["optimizer"] == s.optimizer // 2 and plan.per_device(1)["grads"] == s.grads
    assert plan.per_device(2)["grads"] == s.grads // 2 and plan.per_device(2)["params"] == s.params
    assert plan.per_device(3)["params"] == s.params // 2
    # activations: measured on one batch of the recipe's data; linear in the batch at a fixed image size (ViT)
    vit = load_recipe(VIT_LORA, [], demo=True)
    vit_model = prepare_model(*load_model(vit), vit)
    two, four = (
        memory_plan(
            load_recipe(VIT_LORA, [f"training.batch_size={b}"], demo=True),
            vit_model,
            _task(vit),
            activations=True,
        ).activations
        for b in (2, 4)
    )
    assert two.inputs["pixel_values"][0] == 2 and four.inputs["pixel_values"][0] == 4
    assert two.bytes > 0 and four.bytes == pytest.approx(2 * two.bytes, rel=0.02)

    assert launch.main([str(TINY), "--launcher", "torchrun", "--nproc", "2", "--zero", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    zero2 = next(line for line in out.splitlines() if line.strip().startswith("ZeRO-2"))
    assert zero2.endswith("<- this recipe") and f"{plan.per_device(2)['total'] / 2**20:,.2f} MiB" in zero2
    assert "activations: " in out and "measured: tensors saved for backward" in out


def _task(recipe):
    from trainers.recipe.checks import recipe_task

    return recipe_task(recipe)
