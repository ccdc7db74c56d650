"""LoRA on 2 CPU ranks (gloo): DDP, ZeRO-2 and ZeRO-3 each equal a 1-rank run with the same global batch,
and the ZeRO-3 adapter (with modules_to_save) holds full tensors that reload to the same outputs. The same
holds for the shipped ViT LoRA recipe (`recipes/vit_lora.py --demo`): losses and adapter within the same
tolerances, the same accuracy and the same predicted class for every validation image.

The shipped DETR LoRA recipe (`recipes/detr_lora.py --demo`) joins the same job under DDP and ZeRO-2: losses
and adapter within the same tolerances, the same mAP and the same boxes for every validation image. So does
the shipped ViTPose LoRA recipe (`recipes/vitpose_lora.py --demo`, its heatmap loss ours): the same PCK and
keypoints within a hundredth of a pixel for every validation instance.
Under FSDP2 (`launch.engine=fsdp`) the BLIP LoRA feature recipe without its stage equals 1 rank, and the same run
interrupted after epoch 1 and resumed continues bit-identically; the shipped ViT LoRA recipe runs under FSDP2
too (its mode `vit_lora-fsdp`).
The dual encoder's cross-rank contrastive loss: DDP and ZeRO-2 equal 1 rank with the same global batch (per-step
loss, final weights, retrieval metrics), and its stage thaws exactly the declared text layer from the declared
epoch on every rank; the gather of uneven batches is exact. (The worker's `clip-local-ddp` mode, per-rank
negatives only, was measured once for the README: it does not match; it is not part of this job.)

Every shipped recipe with a demo runs in the job under the engines its family's rule names (rank_modes.py derives
the modes from `recipes/` and the family registry); each equals its 1-rank run in losses and weights
(`test_every_shipped_recipe_mode_equals_one_rank`), and the families above add their own metric checks.
The chat recipes (Qwen2-VL and SmolVLM under DDP, ZeRO-2 and ZeRO-3, PaliGemma under ZeRO-3; LoRA, and SmolVLM's two
vision stages) generate the same answer to every validation conversation as 1 rank and open their stages at the same
steps.
In bf16 (`vit_lora-bf16-zero2`, DeepSpeed's bf16 engine vs 1-rank autocast) losses and adapter agree within
the measured bf16 tolerances and every validation image gets the same class. With 2 persistent loader workers
per rank (`vit_lora-workers-ddp`) the ViT recipe's run is bit-identical to its run without workers, and so is
the same run stopped after epoch 1 and resumed with workers (`vit_lora-workers-resume-ddp`).
One torchrun runs every mode back to back (process start and the DeepSpeed JIT op are paid once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clip_helpers import LayerChanges, stage_clip_recipe
from lora_recipe import importance_recipe, lora_recipe, mix_recipe, same_length_captions
from rank_modes import (
    ENGINES,
    FEATURE_MODES,
    JOB_FEATURE_MODES,
    WORKER_MODES,
    rank_recipe,
    recipe_modes,
    shipped,
    write_train_sets,
)
from safetensors.torch import load_file

from conftest import ROOT
from trainers.launchers.commands import free_port
from trainers.run import complete_run, setup_run

WORKER = Path(__file__).with_name("lora_worker.py")
MODES = ENGINES  # the BLIP feature check's modes: one per engine
RECIPE_MODES = recipe_modes()  # every shipped demo recipe under its family's engines (rank_modes.py)


def modes_of(recipe: str) -> tuple[str, ...]:
    return tuple(name for name, mode in RECIPE_MODES.items() if mode.recipe == recipe)


VIT_MODES = modes_of("vit_lora")
DETR_MODES = modes_of("detr_lora")
VITPOSE_MODES = modes_of("vitpose_lora")
FLORENCE_MODES = modes_of("florence2_lora")
FLORENCE_FREEZE_MODES = modes_of("florence2_omniparser_freeze")
# the chat recipes (JSONL conversations: the chat task's data config), whichever families ship them
CHAT_MODES = tuple(
    name for name, mode in RECIPE_MODES.items() if shipped(mode.recipe).data_kind == "ChatData"
)
CLIP_MODES = ("ddp", "zero2")
SINGLE: dict[str, object] = {}  # the 1-rank run of each shipped recipe, by recipe name
RUNS: dict[str, object] = {}  # the 1-rank dual-encoder run, for the clip tests
# The README's figures (float32 reduction order across ranks / ZeRO flat buffers). Measured here: loss 1.9e-6 in
# every mode (2 float32 ulps at a loss of ~10); adapter weights 3.5e-6 (DDP), 9.6e-7 (ZeRO-2), 3.1e-6 (ZeRO-3).
# ViT (augmentation on): loss 2.4e-7 in every mode; adapter weights 6.2e-7 (DDP), 2.7e-7 (ZeRO-2), 5.1e-7 (ZeRO-3).
LOSS_TOL = 5e-6
WEIGHT_TOL = 5e-6
# bf16 under ZeRO-2 (`vit_lora-bf16-zero2`) against the 1-rank bf16 run: DeepSpeed holds the weights in bf16 (fp32
# master copies) where 1 rank autocasts around fp32 weights, so the logged loss is a bf16 number and the saved
# adapter a bf16 tensor. Measured: loss 5.8e-3 (under one bf16 ulp at a loss of ~1.3, 2^-7), adapter weights
# 1.2e-2 (largest weight 0.13: a few bf16 steps of an lr of 5e-3), every validation image the same class.
BF16_MODES = tuple(
    name for name, mode in FEATURE_MODES.items() if "training.precision=bf16" in mode.overrides
)
BF16_LOSS_TOL = 1e-2
BF16_WEIGHT_TOL = 2.5e-2


def ds_config(path: Path, stage: int, bf16: bool = False) -> Path:
    zero = {"stage": stage}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
    }
    if bf16:
        config["bf16"] = {"enabled": "auto"}  # as ds_configs/: the recipe's training.precision decides
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_dist")
    train_json = same_length_captions(out / "train.json")
    configs = {
        "ddp": "",
        "zero2": f"={ds_config(out / 'z2.json', 2)}",
        "zero3": f"={ds_config(out / 'z3.json', 3)}",
        "fsdp": "",  # launch.engine=fsdp, set by the worker from the mode's engine
    }
    blip, others = JOB_FEATURE_MODES[: len(MODES)], JOB_FEATURE_MODES[len(MODES) :]
    assert blip == MODES
    specs = [f"{mode}{configs[mode]}" for mode in MODES]
    specs += [f"{name}{configs[mode.engine]}" for name, mode in RECIPE_MODES.items()]
    bf16_zero2 = f"={ds_config(out / 'z2_bf16.json', 2, bf16=True)}"
    specs += [
        f"{name}{bf16_zero2 if name in BF16_MODES else configs[FEATURE_MODES[name].engine]}"
        for name in others
    ]
    write_train_sets(out, RECIPE_MODES)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions")
        ),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(WORKER),
        str(out),
        str(train_json),
        *specs,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    reference = lora_recipe(out / "single", batch_size=8, train_json=train_json)  # 1 rank, same global batch
    ctx = setup_run(reference)
    complete_run(ctx)
    RUNS["blip-no-stage"] = setup_run(lora_recipe(out / "single-no-stage", 8, train_json, stage=False))
    complete_run(RUNS["blip-no-stage"])
    for recipe in dict.fromkeys(mode.recipe for mode in RECIPE_MODES.values()):
        SINGLE[recipe] = setup_run(rank_recipe(recipe, out / f"{recipe}-single", ranks=1, data_dir=out))
        complete_run(SINGLE[recipe])
    RUNS["mix"] = setup_run(mix_recipe(out / "mix-single", batch_size=8, train_json=train_json))
    RUNS["mix_summary"] = complete_run(RUNS["mix"])
    for name in BF16_MODES:  # the 1-rank bf16 runs
        mode = FEATURE_MODES[name]
        SINGLE[name] = setup_run(
            rank_recipe(mode.recipe, out / f"{name}-single", ranks=1, data_dir=out, overrides=mode.overrides)
        )
        complete_run(SINGLE[name])
    changes = LayerChanges()
    clip_recipe = stage_clip_recipe(out / "clip-single", batch_size=8)
    clip_recipe.callbacks = [changes.callback]
    clip = setup_run(clip_recipe)
    complete_run(clip)
    clip.layer_changes = changes.moved
    RUNS["clip"] = clip
    from trainers.analysis.importance import measure

    RUNS["importance"] = measure(
        setup_run(importance_recipe(out / "importance-single", batch_size=8)), 3, progress=False
    )
    return out, ctx


def losses(run: Path) -> list[float]:
    return json.loads((run / "losses.json").read_text())["losses"]


@pytest.mark.distributed
@pytest.mark.timeout(1200)  # the module fixture: one 2-rank job of three modes and a 1-rank run
@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_equal_one_rank_with_the_same_global_batch(runs, mode):
    out, single, *_ = runs
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    ref = [e["loss"] for e in single.trainer.state.log_history if "loss" in e]
    got = losses(out / mode)
    assert len(got) == len(ref) == 8  # 2 epochs x 4 steps of 8 samples
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    ref_adapter = load_file(out / "single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert adapter.keys() == ref_adapter.keys()
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", ["checkpointing-ddp", "checkpointing-zero3"])
def test_two_ranks_with_checkpointing_equal_one_rank_without(runs, mode):
    """Gradient checkpointing (non-reentrant) under DDP and ZeRO-3 with a frozen vision tower, LoRA, a gated stage
    and modules_to_save: 2 ranks equal the 1-rank run without checkpointing in losses and adapter weights."""
    out, single, *_ = runs
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    ref = [e["loss"] for e in single.trainer.state.log_history if "loss" in e]
    got = losses(out / mode)
    assert len(got) == len(ref) == 8
    ref_adapter = load_file(out / "single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert adapter.keys() == ref_adapter.keys()
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL and weight_diff <= WEIGHT_TOL


def test_a_weighted_two_source_mix_on_two_ranks_equals_one_rank(runs):
    """The mix is drawn per (seed, epoch) alone: 2 ranks shard the same positions 1 rank reads."""
    out, *_ = runs
    info = json.loads((out / "mix-ddp" / "losses.json").read_text())
    single = RUNS["mix"]
    ref = [e["loss"] for e in single.trainer.state.log_history if "loss" in e]
    assert info["world"] == 2 and len(info["losses"]) == len(ref) == 6  # 2 epochs x 3 steps of 8 of 24
    assert info["data_mix"] == RUNS["mix_summary"]["data_mix"]
    assert info["data_mix"]["sources"]["val"]["size"] == 8
    loss_diff = max(abs(a - b) for a, b in zip(info["losses"], ref, strict=True))
    ref_adapter = load_file(out / "mix-single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / "mix-ddp" / "best" / "adapter_model.safetensors")
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    print(f"mix-ddp: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL and weight_diff <= WEIGHT_TOL


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", RECIPE_MODES)
def test_every_shipped_recipe_mode_equals_one_rank(runs, mode):
    """Any recipe, a new family's included: per-step losses and the saved weights (the adapter, or the full model
    without LoRA) of 2 ranks equal the 1-rank run with the same global batch."""
    out, recipe = runs[0], RECIPE_MODES[mode].recipe
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    ref = [e["loss"] for e in SINGLE[recipe].trainer.state.log_history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) > 0
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    best = out / f"{recipe}-single" / "best"
    name = (
        "adapter_model.safetensors" if (best / "adapter_model.safetensors").is_file() else "model.safetensors"
    )
    want, weights = load_file(best / name), load_file(out / mode / "best" / name)
    assert want and set(want) <= set(weights)  # ZeRO's gathered state dict may add tied aliases
    weight_diff = max((weights[k] - want[k]).abs().max().item() for k in want)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", BF16_MODES)
def test_bf16_two_ranks_equal_one_rank_under_zero2_within_the_bf16_tolerance(runs, mode):
    """bf16: DeepSpeed's bf16 engine on 2 ranks vs bf16 autocast on 1 rank, the same global batch: per-step losses
    and the saved adapter within the measured bf16 tolerances, and the same prediction for every validation image."""
    out = runs[0]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2 and info["deepspeed_bf16"], info  # the engine really ran in bf16
    single = SINGLE[mode]
    assert single.trainer.args.bf16
    ref = [e["loss"] for e in single.trainer.state.log_history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) > 0
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    want = load_file(out / f"{mode}-single" / "best" / "adapter_model.safetensors")
    weights = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert want.keys() == weights.keys()
    weight_diff = max((weights[k].float() - want[k].float()).abs().max().item() for k in want)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= BF16_LOSS_TOL, (mode, got, ref)
    assert weight_diff <= BF16_WEIGHT_TOL, mode
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"] == predictions


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_zero3_adapter_has_full_modules_to_save_tensors_that_reload_to_the_same_outputs(runs):
    from peft import PeftModel
    from test_lora import caption_batch, logits_of

    from trainers.models.blip import TinyBlipSpec, build_tiny_blip

    out, single, *_ = runs
    adapter = load_file(out / "zero3" / "best" / "adapter_model.safetensors")
    saved = {
        k: v
        for k, v in adapter.items()
        if "predictions.transform" in k or "post_layernorm" in k or "layers.11" in k
    }
    assert saved and all(v.numel() > 0 for v in adapter.values())
    assert saved["base_model.model.text_decoder.cls.predictions.transform.dense.weight"].shape == (64, 64)
    # the stage's layer (trained from epoch 1) is in the adapter and moved
    base, processor = build_tiny_blip(TinyBlipSpec(), seed=42)
    moved = adapter["base_model.model.vision_model.encoder.layers.11.mlp.fc1.weight"]
    assert not torch.equal(moved, base.vision_model.encoder.layers[11].mlp.fc1.weight)
    reloaded = PeftModel.from_pretrained(base, str(out / "zero3" / "best"))
    batch = caption_batch(processor)
    diff = (logits_of(reloaded, batch) - logits_of(single.prepared.model, batch)).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", VIT_MODES)
def test_vit_lora_on_two_ranks_equals_one_rank_with_identical_accuracy(runs, mode):
    out, single = runs[0], SINGLE["vit_lora"]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    history = single.trainer.state.log_history
    ref = [e["loss"] for e in history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) == 8  # 2 epochs x 4 steps of 16 images
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    ref_adapter = load_file(out / "vit_lora-single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert adapter.keys() == ref_adapter.keys() and any("classifier" in k for k in adapter)
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode
    last_eval = [e for e in history if "eval_loss" in e][-1]
    assert info["eval"]["eval_accuracy"] == last_eval["eval_accuracy"]
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"] == predictions and len(predictions) == len(single.trainer.evaluator.dataset)


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", DETR_MODES)
def test_detr_lora_on_two_ranks_equals_one_rank_with_identical_map(runs, mode):
    out, single = runs[0], SINGLE["detr_lora"]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    history = single.trainer.state.log_history
    ref = [e["loss"] for e in history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) == 8  # 2 epochs x 4 steps of 16 images
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    ref_adapter = load_file(out / "detr_lora-single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert adapter.keys() == ref_adapter.keys() and any("bbox_predictor" in k for k in adapter)
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    last_eval = [e for e in history if "eval_loss" in e][-1]
    print(
        f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}, "
        f"map {info['eval']['eval_map']} vs {last_eval['eval_map']}"
    )
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode
    assert (
        info["eval"]["eval_map"] == last_eval["eval_map"]
        and info["eval"]["eval_map_50"] == last_eval["eval_map_50"]
    )
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"].keys() == predictions.keys() and len(predictions) == 32
    box_diff = max(
        abs(a - b)
        for k in predictions
        for pa, pb in zip(info["predictions"][k]["boxes"], predictions[k]["boxes"], strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    assert box_diff <= 1e-3, box_diff  # pixels


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", VITPOSE_MODES)
def test_vitpose_lora_on_two_ranks_equals_one_rank_with_identical_pck(runs, mode):
    out, single = runs[0], SINGLE["vitpose_lora"]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    history = single.trainer.state.log_history
    ref = [e["loss"] for e in history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) == 8  # 2 epochs x 4 steps of 16 instances
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    ref_adapter = load_file(out / "vitpose_lora-single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    assert adapter.keys() == ref_adapter.keys() and any("head" in k for k in adapter)
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    last_eval = [e for e in history if "eval_loss" in e][-1]
    print(
        f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}, "
        f"pck {info['eval']['eval_pck']} vs {last_eval['eval_pck']}"
    )
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode
    assert info["eval"]["eval_pck"] == last_eval["eval_pck"]
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"].keys() == predictions.keys() and len(predictions) == 27
    keypoint_diff = max(
        abs(a - b)
        for k in predictions
        for pa, pb in zip(info["predictions"][k]["keypoints"], predictions[k]["keypoints"], strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    # pixels (of 80 px images); measured 0.020 under DDP and ZeRO-2 with the demo's settings at lr 5e-4 (1.6e-3 /
    # 2.4e-3 with augmentation and a decaying lr): the processor's DARK refinement (a Newton step on the log
    # heatmap) magnifies float32 noise in the still flat heatmaps of 8 steps (the loss and adapter match above)
    assert keypoint_diff <= 0.05, keypoint_diff


# The chat recipes (2 epochs of 32 conversations; SmolVLM 5 of 16 with both vision stages), measured here at lr
# 5e-4: loss within 1.4e-6 and weights within 1.4e-6 of 1 rank under DDP, ZeRO-2 and ZeRO-3 (the shared
# per-recipe test above asserts them). The eval loss is the Trainer's mean of per-batch means, so 2 ranks x 4
# conversations weigh ragged lengths unlike 1 x 8: it differed by up to 1.4e-3 and is not compared.
@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", CHAT_MODES)
def test_chat_recipes_on_two_ranks_generate_the_same_answers_and_open_the_same_stages(runs, mode):
    """Generation on 2 ranks (sharded; ZeRO-3 with synced_gpus) answers every val conversation as 1 rank does, and
    a stage opens at the same step; the eval loss is reported beside the answers."""
    out, recipe = runs[0], RECIPE_MODES[mode].recipe
    info, single = json.loads((out / mode / "losses.json").read_text()), SINGLE[recipe]
    assert info["world"] == 2 and "eval_loss" in info["eval"] and "eval_exact_match" in info["eval"]
    last_eval = [e for e in single.trainer.state.log_history if "eval_loss" in e][-1]
    assert info["eval"]["eval_exact_match"] == last_eval["eval_exact_match"]
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"] == predictions and len(predictions) == 8
    stages = json.loads((out / mode / "training_summary.json").read_text())["stages_opened_at_step"]
    want = json.loads((out / f"{recipe}-single" / "training_summary.json").read_text())[
        "stages_opened_at_step"
    ]
    assert stages == want and (bool(stages) == shipped(recipe).stages), (stages, want)


def _clip_reference(runs):
    out = runs[0]
    single = RUNS["clip"]
    ref = [e["loss"] for e in single.trainer.state.log_history if "loss" in e]
    weights = load_file(out / "clip-single" / "best" / "model.safetensors")
    return out, single, ref, weights


# The dual encoder (tiny ViT + tiny BERT, the loss over embeddings gathered from both ranks). Measured here:
# loss 4.8e-7, weights 1.5e-6 (DDP and ZeRO-2); per-rank negatives (clip-local-ddp, measured once): loss 0.70,
# weights 6.4e-3.
@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", CLIP_MODES)
def test_clip_two_ranks_equal_one_rank_with_the_global_batch_negatives(runs, mode):
    out, single, ref, ref_weights = _clip_reference(runs)
    info = json.loads((out / f"clip-{mode}" / "losses.json").read_text())
    assert info["world"] == 2
    got = info["losses"]
    assert len(got) == len(ref) == 8  # 2 epochs x 4 steps of 8 pairs
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    weights = load_file(out / f"clip-{mode}" / "best" / "model.safetensors")
    assert weights.keys() == ref_weights.keys()
    weight_diff = max((weights[k] - ref_weights[k]).abs().max().item() for k in ref_weights)
    print(f"clip-{mode}: max |loss diff| {loss_diff:.2e}, max |weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (mode, got, ref)
    assert weight_diff <= WEIGHT_TOL, mode
    last_eval = [e for e in single.trainer.state.log_history if "eval_loss" in e][-1]
    for key in ("eval_mean_recall", "eval_t2i_r1", "eval_i2t_r5", "eval_t2i_mean_rank"):
        assert info["eval"][key] == pytest.approx(last_eval[key], abs=1e-9), key


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", FLORENCE_MODES)
def test_florence_lora_zero2_on_two_ranks_equals_one_rank_with_identical_map(runs, mode):
    out, single = runs[0], SINGLE["florence2_lora"]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    history = single.trainer.state.log_history
    ref = [e["loss"] for e in history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) == 4  # 1 epoch x 4 steps of 8 lines, curriculum order
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    ref_adapter = load_file(out / "florence2_lora-single" / "best" / "adapter_model.safetensors")
    adapter = load_file(out / mode / "best" / "adapter_model.safetensors")
    # peft stores modules_to_save tensors under the module's own name: every non-LoRA key is one
    assert adapter.keys() == ref_adapter.keys() and any("lora_" not in k for k in adapter)
    weight_diff = max((adapter[k] - ref_adapter[k]).abs().max().item() for k in ref_adapter)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (got, ref)
    assert weight_diff <= WEIGHT_TOL
    last_eval = [e for e in history if "eval_loss" in e][-1]
    assert info["eval"]["eval_map_50"] == last_eval["eval_map_50"]
    assert info["eval"]["eval_map"] == last_eval["eval_map"]
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert (
        info["predictions"] == predictions and len(predictions) == 6
    )  # the same generated text, line for line


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", CLIP_MODES)
def test_clip_stage_thaws_the_declared_layer_from_its_epoch_on_every_rank(runs, mode):
    out, single, _, _ = _clip_reference(runs)
    expected = single.layer_changes
    assert (
        expected[0]["layer1"] == 0.0 and expected[1]["layer1"] > 0.0
    )  # 1 rank: frozen in epoch 0, trains in 1
    assert all(e["layer0"] == 0.0 and e["embeddings"] == 0.0 for e in expected)
    for rank in (0, 1):
        record = json.loads((out / f"clip-{mode}" / f"layers_rank{rank}.json").read_text())
        assert record["stages"] == {"0": 4}, rank
        moved = record["moved"]
        assert moved[0]["layer1"] == 0.0 and moved[1]["layer1"] > 0.0, (rank, moved)
        assert all(m["layer0"] == 0.0 and m["embeddings"] == 0.0 for m in moved), (rank, moved)


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", FLORENCE_FREEZE_MODES)
def test_florence_keyword_freeze_zero2_on_two_ranks_equals_one_rank_with_identical_map(runs, mode):
    out, single = runs[0], SINGLE["florence2_omniparser_freeze"]
    info = json.loads((out / mode / "losses.json").read_text())
    assert info["world"] == 2
    history = single.trainer.state.log_history
    ref = [e["loss"] for e in history if "loss" in e]
    got = info["losses"]
    assert len(got) == len(ref) == 4
    loss_diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    want = load_file(out / "florence2_omniparser_freeze-single" / "best" / "model.safetensors")
    weights = load_file(out / mode / "best" / "model.safetensors")
    # save_pretrained writes the tied embedding once (`shared`); DeepSpeed's gathered state dict also writes its
    # aliases (lm_head, encoder/decoder embed_tokens): the same tensor, so they must equal it
    assert set(want) <= set(weights)
    shared = "model.language_model.shared.weight"
    for alias in set(weights) - set(want):
        assert torch.equal(weights[alias], weights[shared]), alias
    weight_diff = max((weights[k] - want[k]).abs().max().item() for k in want)
    print(f"{mode}: max |loss diff| {loss_diff:.2e}, max |weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL, (got, ref)
    assert weight_diff <= WEIGHT_TOL
    frozen = "model.vision_tower.convs.0.conv.weight"  # outside the keyword modules: bit-identical in both
    assert torch.equal(weights[frozen], want[frozen])
    last_eval = [e for e in history if "eval_loss" in e][-1]
    assert info["eval"]["eval_map_50"] == last_eval["eval_map_50"]
    predictions = {str(k): v for k, v in sorted(single.trainer.evaluator.last_predictions.items())}
    assert info["predictions"] == predictions and len(predictions) == 6


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_clip_gather_of_uneven_batches_equals_one_process(runs):
    """Ranks holding 3 and 2 pairs (an uneven last batch): padded for the gather, cut back, exact."""
    out = runs[0]
    for rank, rows in ((0, 3), (1, 2)):
        check = json.loads((out / f"clip_uneven_gather_rank{rank}.json").read_text())
        assert check["rows"] == rows
        assert check["loss_diff"] <= 1e-6 and check["grad_diff"] <= 1e-6, check


@pytest.mark.distributed
@pytest.mark.parametrize("mode", MODES)
def test_layer_importance_on_two_ranks_reads_the_full_gradient(runs, mode):
    """Under ZeRO `p.grad` is empty or a shard; the importance reads DeepSpeed's full gradients, which equal
    the 1-rank gradients of the same global batch at every step."""
    out = runs[0]
    two = json.loads((out / f"importance-{mode}" / "importance.json").read_text())
    one = RUNS["importance"]
    assert two["world_size"] == 2 and one.world_size == 1 and two["steps"] == one.steps == 3
    assert two["gradient_source"] == ("p.grad" if mode == "ddp" else "deepspeed.utils.safe_get_full_grad")
    assert [r["layer"] for r in two["layers"]] == [r.layer for r in one.layers]
    reference = {r.layer: r.norms for r in one.layers}
    for row in two["layers"]:
        assert row["norms"] == pytest.approx(reference[row["layer"]], rel=1e-5), row["layer"]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "best" / "adapter_model.safetensors")


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_fsdp_two_ranks_equal_one_rank_for_captioning_lora_with_frozen_towers(runs):
    """FSDP2 full-shard, 2 ranks x 4 = 1 rank x 8: BLIP with frozen towers, LoRA beside a frozen base in the
    same wrapped blocks, modules_to_save, a freeze rule and a param group (the feature recipe without its
    stage: FSDP refuses stages). Per-step losses, the gathered adapter of the best model, its captions."""
    out = runs[0]
    info = json.loads((out / "blip-fsdp" / "losses.json").read_text())
    assert info["world"] == 2
    single = RUNS["blip-no-stage"].trainer
    ref = [e["loss"] for e in single.state.log_history if "loss" in e]
    assert len(info["losses"]) == len(ref) == 8
    loss_diff = max(abs(a - b) for a, b in zip(info["losses"], ref, strict=True))
    want, got = _adapter(out / "single-no-stage"), _adapter(out / "blip-fsdp")
    assert want.keys() == got.keys()
    weight_diff = max((got[k] - want[k]).abs().max().item() for k in want)
    print(f"fsdp captioning: max |loss diff| {loss_diff:.2e}, max |adapter weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOL and weight_diff <= WEIGHT_TOL
    reference_predictions = {str(k): v for k, v in sorted(single.evaluator.last_predictions.items())}
    assert info["predictions"] == reference_predictions


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_fsdp_resume_continues_bit_identically(runs):
    """Interrupted after epoch 1 and resumed from its FSDP checkpoint (sharded model and optimizer files, one
    per rank) in a fresh Trainer: the same losses and the same adapter, bit for bit, as the uninterrupted run."""
    out = runs[0]
    straight = json.loads((out / "blip-fsdp" / "losses.json").read_text())
    resumed = json.loads((out / "blip-resume-fsdp" / "losses.json").read_text())
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith("checkpoint-4")
    kept = sorted(
        (out / "blip-resume-fsdp" / "checkpoints").glob("checkpoint-*")
    )  # checkpoint-4 is rotated out
    assert kept and any(kept[-1].glob("pytorch_model_fsdp*")), (
        "the run's checkpoints are not FSDP checkpoints"
    )
    assert resumed["losses"] == straight["losses"]
    a, b = _adapter(out / "blip-fsdp"), _adapter(out / "blip-resume-fsdp")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["predictions"] == straight["predictions"]


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", WORKER_MODES)
def test_loader_workers_and_a_resume_with_them_give_the_run_without_workers_bit_for_bit(runs, mode):
    """The ViT recipe (seeded crop and flip drawn per epoch and index) on 2 ranks with 2 persistent loader
    workers each, straight and stopped after epoch 1 then resumed in a fresh Trainer: the same per-step losses,
    adapter and predictions, bit for bit, as the same 2 ranks loading in the training process (`vit_lora-ddp`,
    which equals 1 rank within the tolerances above)."""
    out = runs[0]
    without = json.loads((out / "vit_lora-ddp" / "losses.json").read_text())
    info = json.loads((out / mode / "losses.json").read_text())
    assert without["loader_workers"] == [0, False] and info["loader_workers"] == [2, True]
    assert info["world"] == 2
    if mode.endswith("resume-ddp"):
        assert info["resumed_from"] and info["resumed_from"].endswith("checkpoint-4"), info["resumed_from"]
    assert len(info["losses"]) == 8 and info["losses"] == without["losses"]
    a, b = _adapter(out / "vit_lora-ddp"), _adapter(out / mode)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert info["predictions"] == without["predictions"]
