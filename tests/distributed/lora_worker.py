"""One rank of the multi-rank LoRA test: trains each mode given, back to back.

    torchrun --nproc_per_node 2 tests/distributed/lora_worker.py OUT TRAIN_JSON MODE[=DS_CONFIG] ...

MODE is a name from rank_modes.py; `=cfg.json` enables DeepSpeed with that config (ZeRO-2 / ZeRO-3). The
shipped recipes' modes (`<recipe>-<engine>`, e.g. `vit_lora-zero3`) train the recipe's demo shortened by its
family's rule (a special training set, if the rule declares one, is read from OUT, written by the test). The
feature checks: `ddp` / `zero2` / `zero3` train the BLIP LoRA recipe of lora_recipe.py on TRAIN_JSON
(`checkpointing-ddp` / `checkpointing-zero3`: the same with gradient checkpointing);
`blip-fsdp` the same recipe without its stage under FSDP2 and `blip-resume-fsdp` that run interrupted after its
first epoch and resumed from the checkpoint in a fresh Trainer (`vit_lora-workers-resume-ddp` likewise, with
2 loader workers per rank); `clip-<engine>` the tiny dual encoder with its
cross-rank contrastive loss and a text-tower stage
(`clip-local-ddp`: the same with per-rank negatives only, for comparison), each rank writing which text
layers moved by epoch to OUT/MODE/layers_rank<N>.json; `importance-<engine>` measures layer importance
(`trainers.analysis.importance`, 3 steps of the full tiny ViT) into OUT/MODE/importance.json; `mix-ddp` the
BLIP LoRA recipe on a weighted two-source mix (its summary's per-source counts in losses.json).
Rank 0 writes OUT/MODE/losses.json (per-step training loss, the last evaluation's metrics) next to the run's
outputs (best/ = the adapter).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "distributed")]


STEPS_PER_EPOCH = 4  # the feature recipe (32 captions at a global batch of 8) and the ViT rule's (64 at 16)


class StopAt(TrainerCallback):
    """Interrupts a run after `step` (the epoch's checkpoint is written at that step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def main() -> None:
    from trainers.lazy_imports import keep_out_bitsandbytes

    keep_out_bitsandbytes()  # no mode quantizes: ~2.5 s less per process, as launch.py does
    import torch.distributed as dist
    from clip_helpers import LayerChanges, stage_clip_recipe, uneven_gather_check
    from lora_recipe import importance_recipe, lora_recipe, mix_recipe
    from rank_modes import CLIP_CHECKS, FSDP_CHECKS, RESUMED_MODES, all_modes, rank_recipe
    from reset import reset_between_runs

    from trainers.run import complete_run, is_main_process, setup_run

    logging.basicConfig(level=logging.WARNING)
    out = Path(sys.argv[1])
    train_json = Path(sys.argv[2])
    modes = all_modes()
    for spec in sys.argv[3:]:
        name, _, ds_config = spec.partition("=")
        mode = modes[name]
        changes = None
        if (
            mode.recipe == "importance"
        ):  # layer importance (3 steps, full ViT): gradients as 1 rank reads them
            from trainers.analysis.importance import measure

            recipe = importance_recipe(out / name, batch_size=4)  # 2 ranks x 4 = the 1-rank batch of 8
            recipe.launch.deepspeed_config = ds_config or None
            report = measure(setup_run(recipe), 3, progress=False)
            if is_main_process():
                (out / name / "importance.json").write_text(json.dumps(report.to_dict()))
            reset_between_runs()
            continue
        if mode.recipe in ("blip-features", "blip-features-checkpointing"):
            recipe = lora_recipe(out / name, batch_size=4, train_json=train_json)  # 2 ranks x 4 = 1 rank x 8
            recipe.training.gradient_checkpointing = mode.recipe.endswith("checkpointing")
        elif mode.recipe in FSDP_CHECKS:
            recipe = lora_recipe(out / name, batch_size=4, train_json=train_json, stage=False)
        elif mode.recipe == "blip-mix":
            recipe = mix_recipe(out / name, batch_size=4, train_json=train_json)
        elif mode.recipe in CLIP_CHECKS:
            recipe = stage_clip_recipe(out / name, batch_size=4)  # 2 ranks x 4 = the 1-rank batch of 8
            changes = LayerChanges()
            recipe.callbacks = [changes.callback]
        else:
            recipe = rank_recipe(mode.recipe, out / name, ranks=2, data_dir=out, overrides=mode.overrides)
        recipe.launch.deepspeed_config = ds_config or None
        recipe.launch.engine = "fsdp" if mode.engine == "fsdp" else "auto"
        if name in RESUMED_MODES:  # the first leg stops after epoch 1 (its checkpoint), then resumes
            first = setup_run(recipe)
            first.trainer.add_callback(StopAt(STEPS_PER_EPOCH))
            complete_run(first)
            del first
            reset_between_runs()
            recipe.training.resume = "auto"
        ctx = setup_run(recipe)
        assert ctx.trainer.is_deepspeed_enabled == bool(ds_config), name
        assert ctx.trainer.is_fsdp_enabled == (mode.engine == "fsdp"), name
        if mode.recipe == "clip-stage-local":
            ctx.task.loss_scope = "local"
        summary = complete_run(ctx)
        if changes is not None:
            rank = dist.get_rank()
            (out / name / f"layers_rank{rank}.json").write_text(
                json.dumps({"moved": changes.moved, "stages": summary["stages_opened_at_step"]})
            )
        if is_main_process():
            losses = [e["loss"] for e in ctx.trainer.state.log_history if "loss" in e]
            evals = [e for e in ctx.trainer.state.log_history if "eval_loss" in e]
            (out / name / "losses.json").write_text(
                json.dumps(
                    {
                        "losses": losses,
                        "world": summary["world_size"],
                        "resumed_from": ctx.resume_from,
                        "loader_workers": [
                            ctx.trainer.args.dataloader_num_workers,
                            ctx.trainer.args.dataloader_persistent_workers,
                        ],
                        "data_mix": summary.get("data_mix"),
                        "deepspeed_bf16": bool(ds_config) and ctx.trainer.model_wrapped.bfloat16_enabled(),
                        "eval": evals[-1],
                        "predictions": {
                            str(k): v for k, v in sorted(ctx.trainer.evaluator.last_predictions.items())
                        },
                    }
                )
            )
        del ctx
        reset_between_runs()
    if dist.is_initialized() and any(
        modes[spec.partition("=")[0]].recipe in CLIP_CHECKS for spec in sys.argv[3:]
    ):
        rank = dist.get_rank()
        check = uneven_gather_check(rank, dist.get_world_size())
        (out / f"clip_uneven_gather_rank{rank}.json").write_text(json.dumps(check))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
