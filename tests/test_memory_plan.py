"""The dry-run's memory figures: the model-state part equals the bytes a real optimizer step leaves behind
(params, grads, optimizer state) for a freeze + stage config, LoRA, 4-bit QLoRA and bitsandbytes' 8-bit AdamW;
ZeRO divides the parts the stage shards; the ZeRO-2/3 rows against DeepSpeed's own estimators (differences
explained below); a `--deepspeed FILE` is read for its stage and offload; the measured activations grow
linearly with the batch; `--dry-run` prints them, and with gradient checkpointing shows them drop for every
recipe."""

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
    "8-bit AdamW, freeze+stage (BLIP)": (TINY, ["training.optim=adamw_bnb_8bit"]),
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


def test_zero_rows_against_deepspeeds_estimators():
    """Full fine-tune in bf16 under DeepSpeed, as DeepSpeed's estimators assume. ZeRO-2: ours = DeepSpeed's
    `2P + 18P/N` plus torch AdamW's fp32 `step` per tensor (4 B x tensors / N), which DeepSpeed leaves out.
    ZeRO-3: DeepSpeed's `4 x largest layer + 18P/N`, where 18 = 2 (bf16 grads) + 4 (fp32 grads) + 4 (fp32
    params) + 8 (Adam), leaves out the bf16 parameter partition (2P/N) that its own offload-optimizer formula
    counts; ours counts it, and the gathered layer in its bf16 storage (2 B a parameter, DeepSpeed assumes 4),
    so ours = DeepSpeed's + 2P/N + 4T/N - 2 x largest layer. With offload
    the device side is DeepSpeed's exactly up to the same layer term (ZeRO-2: the bf16 params, 2P)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from trainers.plan import load_model
    from trainers.reporting.memory_plan import MemoryPlan, model_state

    model = load_model(load_recipe(TINY, [], demo=True))[0]
    for p in model.parameters():
        p.requires_grad_(True)
    state = model_state(model, deepspeed_half=True)
    P, T, L = state.params_count, state.trainable_tensors, state.largest_layer_params
    assert state.trainable_count == P and L > 0
    for n in (1, 2, 4, 8):
        plan = MemoryPlan(state, n, None, False, "adamw_torch", "bf16")
        _, zero2 = estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=n, cpu_offload=False)
        _, zero3, _ = estimate_zero3_model_states_mem_needs(P, L, num_gpus_per_node=n, cpu_offload=False)
        ours2, ours3 = plan.per_device(2)["total"], plan.per_device(3)["total"]
        print(f"N={n}: ZeRO-2 ours {ours2} DeepSpeed {zero2}; ZeRO-3 ours {ours3} DeepSpeed {zero3}")
        assert abs(ours2 - zero2 - 4 * T / n) <= 3  # integer divisions
        assert abs(ours3 - zero3 - (2 * P / n + 4 * T / n - 2 * L)) <= 4
        _, off2 = estimate_zero2_model_states_mem_needs(P, num_gpus_per_node=n, cpu_offload=True)
        assert plan.per_device(2, offload=True)["total"] == off2 == 2 * P
        _, off3, _ = estimate_zero3_model_states_mem_needs(P, L, num_gpus_per_node=n, cpu_offload=True)
        assert plan.per_device(3, offload=True)["total"] == off3 - 2 * L  # only the gathered layer stays
        _, opt3, _ = estimate_zero3_model_states_mem_needs(
            P, L, num_gpus_per_node=n, cpu_offload=True, cpu_offload_params=False
        )
        ours = plan.per_device(3, offload=True, offload_params=False)["total"]
        assert abs(ours - (opt3 - 2 * L)) <= 2


def test_a_deepspeed_file_sets_the_rows_stage_and_offload(tmp_path, capsys):
    """With `--deepspeed FILE` the plan marks the file's stage (not DDP) and reads its offload sections."""
    import json

    import launch

    config = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    path = tmp_path / "zero3_opt_offload.json"
    path.write_text(json.dumps(config))
    argv = [str(TINY), "--launcher", "torchrun", "--nproc", "2", "--deepspeed", str(path), "--dry-run"]
    assert launch.main(argv) == 0
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if line.endswith("<- this recipe")]
    assert len(marked) == 1 and marked[0].strip().startswith("ZeRO-3+off"), marked
    assert f"read from {path}" in out and "optimizer state and gradient partition live in CPU" in out
    assert "and the params" not in out  # the file offloads only the optimizer

    from trainers.plan import load_model, prepare_model

    recipe = load_recipe(
        TINY, ["launch.launcher=torchrun", "launch.nproc=2", f"launch.deepspeed_config={path}"], demo=True
    )
    plan = memory_plan(recipe, prepare_model(*load_model(recipe), recipe))
    assert (plan.zero, plan.offload, plan.offload_params) == (3, True, False)
    mine = plan.this_recipe()
    assert mine["optimizer"] == mine["grads"] == 0 and mine["params"] > 0 and mine["host"] > 0


RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("name", RECIPES)
def test_dry_run_shows_checkpointing_and_bf16_change_the_prediction(name, capsys):
    """`launch.py RECIPE --demo --dry-run training.gradient_checkpointing=true training.precision=bf16`: the
    measured activations drop (both figures printed)."""
    import re

    import launch

    flags = ["training.gradient_checkpointing=true", "training.precision=bf16"]
    assert launch.main([f"recipes/{name}", "--demo", "--dry-run", *flags]) == 0
    out = capsys.readouterr().out
    line = next(
        x for x in out.splitlines() if x.strip().startswith("gradient checkpointing:") and "instead of" in x
    )
    with_, without = (float(v.replace(",", "")) for v in re.findall(r"([\d,.]+) MiB", line)[:2])
    print(f"{name}: {line.strip()}")
    assert with_ < without
    assert "bf16 autocast" in out and "(non-reentrant)" in out


# Real recipes whose model does not run on meta tensors built from its config, and why (the dry-run prints it):
# their activations stay "not measured" and the table shows the model state only.
NOT_ON_META = {
    # DETR's size comes from its image processor (shortest edge 800); at 800 x 1066 its pixel mask then reaches
    # the attention mask code's `mask.all()`, which needs data
    "detr_lora": "gives no image size",
    "florence2_lora": "gives no image size",  # so does Florence-2's (768), and its image tokens are counted
    "florence2_omniparser_freeze": "gives no image size",
    "florence2_omniparser_hybrid": "gives no image size",
    "qwen2_vl_lora": "gives no image size",  # dynamic resolution: the patch grid comes with the image
    "paligemma_lora": "Tensor.item() cannot be called on meta tensors",  # image tokens counted against features
    "smolvlm_progressive": "not enough values to unpack",  # images split into tiles by its processor
}


@pytest.mark.parametrize("name", RECIPES)
def test_dry_run_without_weights_measures_activations_on_the_meta_device(name, capsys):
    """`launch.py RECIPE --dry-run training.gradient_checkpointing=true training.precision=bf16` on the real
    architecture (no weights here, so on the meta device): the checkpointed layers are named, and the
    activations, measured on meta tensors of the real input sizes, drop with checkpointing (both figures
    printed) -- or, for the recipes of `NOT_ON_META`, the plan says in one line why they are not measured."""
    import re

    import launch

    flags = ["training.gradient_checkpointing=true", "training.precision=bf16"]
    assert launch.main([f"recipes/{name}", "--dry-run", *flags]) == 0
    out = capsys.readouterr().out
    assert "gradient checkpointing: on (non-reentrant)" in out
    why = NOT_ON_META.get(name.removesuffix(".py"))
    if why is not None:
        line = next(x for x in out.splitlines() if x.strip().startswith("activations:"))
        assert "activations: not measured (the model's weights are not available locally" in line
        assert why in line, line
        return
    assert "measured on the meta device" in out and "bf16 autocast" in out
    line = next(
        x for x in out.splitlines() if x.strip().startswith("gradient checkpointing:") and "instead of" in x
    )
    with_, without = (float(v.replace(",", "")) for v in re.findall(r"([\d,.]+) MiB", line)[:2])
    print(f"{name}: {line.strip()}")
    assert 0 < with_ < without


def test_the_meta_device_count_equals_the_count_on_real_tensors():
    """What the dry-run measures without weights: the same forward + backward on meta tensors saves the same
    bytes, storage by storage, as on real ones (tiny BLIP, checkpointing on: outside, per layer, layer inputs)."""
    import copy

    from trainers.models.blip import TinyBlipSpec, build_tiny_blip
    from trainers.reporting.memory_plan import activation_profile

    model, _ = build_tiny_blip(TinyBlipSpec(), seed=0)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    size = model.config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (2, 9), generator=g)
    batch = {"pixel_values": torch.randn(2, 3, size, size, generator=g), "input_ids": ids, "labels": ids}
    real = activation_profile(model, batch)
    meta = activation_profile(copy.deepcopy(model).to("meta"), {k: v.to("meta") for k, v in batch.items()})
    assert real.inside and real.without_checkpointing > real.with_checkpointing
    assert (meta.outside, meta.inside, meta.layer_inputs) == (real.outside, real.inside, real.layer_inputs)


def test_a_layer_input_freed_mid_forward_is_still_counted_once():
    """Storages are told apart by address: a checkpointed layer's input that nothing saves is freed after the
    layer, and the allocator hands its address to the next storage the forward saves outside every layer. Each
    of the 20 inputs (4x8 fp32 = 128 bytes) is kept by checkpointing and must count, whatever the allocator
    does (the count once dropped half of them, and the meta-device count of tiny BLIP differed from the real
    one in one run of the suite)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from trainers.reporting.memory_plan import activation_profile

    class AddOne(
        GradientCheckpointingLayer
    ):  # saves nothing for backward: its input is only kept to recompute
        def forward(self, x):
            return x + 1.0

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8))
            self.blocks = torch.nn.ModuleList(AddOne() for _ in range(20))
            for block in self.blocks:
                block.gradient_checkpointing = True

        def forward(self, x):
            out = x * self.weight
            for block in self.blocks:
                out = (block(out * 1.0) * self.weight).sin()
            return out.sum()

    model = Chain()
    for _ in range(5):
        profile = activation_profile(model, {"x": torch.randn(4, 8)}, lambda m, batch: m(**batch))
        assert profile.layer_inputs == 20 * 4 * 8 * 4


def test_fsdp2_row_divides_every_part_and_gathers_the_root_and_two_blocks(capsys):
    """launch.engine=fsdp: params, grads and optimizer state over the world size; gathered = the root group
    (outside the wrapped blocks) + two of the largest block, in bf16 under bf16 mixed precision."""
    import launch
    from trainers.fsdp import wrap_classes
    from trainers.plan import load_model, prepare_model

    args = ["launch.launcher=torchrun", "launch.nproc=2", "launch.engine=fsdp"]
    recipe = load_recipe(VIT_LORA, args, demo=True)
    prepared = prepare_model(*load_model(recipe), recipe)
    plan = memory_plan(recipe, prepared)
    s, row = plan.state, plan.this_recipe()
    assert (row["params"], row["grads"], row["optimizer"]) == (s.params // 2, s.grads // 2, s.optimizer // 2)
    blocks = [m for m in prepared.model.modules() if type(m).__name__ in wrap_classes(prepared.model)]
    assert len(blocks) == plan.fsdp.blocks == 4
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    root = sum(p.nbytes for p in unique_parameters(prepared.model) if id(p) not in in_blocks)
    largest = max(sum(p.nbytes for p in b.parameters()) for b in blocks)
    assert (plan.fsdp.root_bytes, plan.fsdp.largest_block_bytes) == (root, largest)
    assert row["gathered"] == root + 2 * largest and row["total"] == sum(
        row[k] for k in ("params", "grads", "optimizer", "gathered")
    )
    bf16 = memory_plan(load_recipe(VIT_LORA, [*args, "training.precision=bf16"], demo=True), prepared)
    assert bf16.fsdp.gathered == plan.fsdp.gathered // 2  # gathered in the compute dtype; shards stay fp32
    assert memory_plan(load_recipe(VIT_LORA, args[:2], demo=True), prepared).fsdp is None

    assert (
        launch.main(
            [
                str(VIT_LORA),
                "--demo",
                "--launcher",
                "torchrun",
                "--nproc",
                "2",
                "launch.engine=fsdp",
                "--dry-run",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    fsdp_line = next(line for line in lines if line.strip().startswith("FSDP2"))
    assert fsdp_line.endswith("<- this recipe") and f"{row['total'] / 2**20:,.2f} MiB" in fsdp_line
    assert sum(line.endswith("<- this recipe") for line in lines) == 1
