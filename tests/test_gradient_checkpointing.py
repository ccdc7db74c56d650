"""Gradient checkpointing (`training.gradient_checkpointing`) per family, on CPU in fp32.

For one demo recipe of every family (LoRA on a frozen base: the checkpointed layers' inputs do not require
grad), the BLIP progressive recipe (partly frozen tower, gated stage) and 4-bit QLoRA: one step with
checkpointing gives the same loss and the same gradient for every trainable parameter as one without, within
1e-6 absolute (measured: 0 on every family here, the recompute replays the same fp32 ops); the activation
bytes the dry-run reports drop, and the tensors autograd really keeps outside the recomputed layers stay
within that prediction. A model transformers cannot checkpoint is refused in one paragraph.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.shipped_recipes import one_per_family, shipped_demo_recipes
from conftest import ROOT
from trainers.errors import RecipeError
from trainers.recipe import load_recipe

TOLERANCE = 1e-6  # absolute, loss and every gradient element (fp32)
SHIPPED = shipped_demo_recipes()
CASES = {
    **{name: (name, []) for name in one_per_family(SHIPPED.values())},
    "blip_progressive (frozen tower + gated stage)": ("blip_progressive", ["training.epochs=2"]),
    "vit_lora 4-bit QLoRA": ("vit_lora", ["model.quantization=4bit"]),
}


@pytest.fixture(autouse=True)
def _root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def build(name: str, extra: list[str], checkpointing: bool):
    from trainers.plan import load_model, prepare_model
    from trainers.recipe.checks import recipe_task

    recipe = load_recipe(
        SHIPPED[name].path,
        [*extra, f"training.gradient_checkpointing={str(checkpointing).lower()}", "training.batch_size=2"],
        demo=True,
    )
    torch.manual_seed(recipe.training.seed)  # as the run's set_seed: LoRA's init draws from the global RNG
    prepared = prepare_model(*load_model(recipe), recipe)
    task = recipe_task(recipe)
    data = task.build(recipe, prepared.processor)
    batch = data.collator([data.train[i] for i in range(2)])
    return prepared, task, batch


def one_step(model, task, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # dropout masks: the same draws with and without (checkpoint replays its RNG)
        loss = task.compute_loss(model, batch)
        if loss is None:
            loss = model(**batch).loss
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def outer_saved_bytes(model, task, batch) -> int:
    """What autograd keeps outside the recomputed layers with checkpointing really on (inside, the checkpoint's
    own hooks take over)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = task.compute_loss(model, batch)
        if loss is None:
            loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointing_keeps_loss_and_gradients_and_saves_activations(case):
    from trainers.models.checkpointing import checkpointed_layers
    from trainers.reporting.memory_plan import activation_profile

    name, extra = CASES[case]
    plain, task, batch = build(name, extra, checkpointing=False)
    checked, _, _ = build(name, extra, checkpointing=True)
    assert not checkpointed_layers(plain.model) and checkpointed_layers(checked.model)
    assert checked.checkpointing is not None and checked.checkpointing.layers

    loss_plain, grads_plain = one_step(plain.model, task, batch)
    loss_ckpt, grads_ckpt = one_step(checked.model, task, batch)
    assert grads_plain and set(grads_plain) == set(grads_ckpt)
    worst = max((grads_plain[n] - grads_ckpt[n]).abs().max().item() for n in grads_plain)
    print(
        f"{case}: loss {loss_plain:.6f} vs {loss_ckpt:.6f}, max |grad diff| {worst:.2e} over {len(grads_plain)}"
    )
    assert abs(loss_plain - loss_ckpt) <= TOLERANCE and worst <= TOLERANCE
    # LoRA / frozen inputs: the first checkpointed layer's trainable parameters still get gradients
    assert any(g.abs().sum() > 0 for g in grads_ckpt.values())

    profile = activation_profile(checked.model, batch, task.compute_loss)
    kept = outer_saved_bytes(checked.model, task, batch)
    without, with_ = profile.without_checkpointing, profile.with_checkpointing
    print(
        f"{case}: saved for backward {without} B without, {with_} B with ({with_ / without:.2f}x); outside {kept} B"
    )
    assert with_ < without
    assert kept <= with_
    assert checkpointed_layers(checked.model)  # the measurement leaves checkpointing on


def test_a_model_without_checkpointable_layers_is_refused():
    from transformers import ResNetConfig, ResNetForImageClassification

    from trainers.models.checkpointing import enable

    model = ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 8], depths=[1, 1], embedding_size=8))
    with pytest.raises(RecipeError) as error:
        enable(model)
    message = str(error.value)
    assert "training.gradient_checkpointing=true" in message and "ResNetForImageClassification" in message
    assert "training.gradient_checkpointing=false" in message and "\n" not in message


def test_the_plan_names_what_is_not_checkpointed():
    """Florence-2's DaViT vision tower and DETR's ResNet backbone have no checkpointing in transformers."""
    florence, _, _ = build("florence2_lora", [], checkpointing=True)
    detr, _, _ = build("detr_lora", [], checkpointing=True)
    assert any("vision_tower" in u for u in florence.checkpointing.uncovered)
    assert any("backbone" in u for u in detr.checkpointing.uncovered)
    assert "not checkpointed" in florence.checkpointing.render()
