"""One rank of the multi-rank LoRA test: trains the same LoRA recipe under each mode given, back to back.

    torchrun --nproc_per_node 2 tests/distributed/lora_worker.py OUT TRAIN_JSON MODE[=DS_CONFIG] ...

MODE `ddp` is plain DDP; `zero2=cfg.json` / `zero3=cfg.json` enable DeepSpeed with that config; a `vit-`
prefix (`vit-ddp`, `vit-zero3=cfg.json`) trains the shipped ViT LoRA recipe's demo instead of the BLIP one,
a `detr-` prefix the DETR one (on OUT/detr_train.json, written by the test), a `vitpose-` prefix the ViTPose
one, a `florence-` prefix
(`florence-zero2=cfg.json`) the Florence-2 LoRA recipe's demo, `florencefreeze-` its keyword-freeze recipe's.
a `clip-` prefix the tiny dual encoder with its cross-rank contrastive loss and a text-tower stage
(`clip-local-ddp`: the same with per-rank negatives only, for comparison), each rank writing which text
layers moved by epoch to OUT/MODE/layers_rank<N>.json; an `importance-` prefix measures layer importance
(`trainers.analysis.importance`, 3 steps of the full tiny ViT) into OUT/MODE/importance.json.
Rank 0 writes OUT/MODE/losses.json (per-step training loss, the last evaluation's metrics) next to the run's
outputs (best/ = the adapter).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "distributed")]


def main() -> None:
    from trainers.lazy_imports import keep_out_bitsandbytes

    keep_out_bitsandbytes()  # no mode quantizes: ~2.5 s less per process, as launch.py does
    import torch.distributed as dist
    from clip_helpers import LayerChanges, stage_clip_recipe, uneven_gather_check
    from lora_recipe import (
        detr_lora_recipe,
        florence_lora_recipe,
        lora_recipe,
        vit_lora_recipe,
        vitpose_lora_recipe,
    )
    from reset import reset_between_runs

    from trainers.run import complete_run, is_main_process, setup_run

    logging.basicConfig(level=logging.WARNING)
    out = Path(sys.argv[1])
    train_json = Path(sys.argv[2])
    for spec in sys.argv[3:]:
        mode, _, ds_config = spec.partition("=")
        changes = None
        if mode.startswith(
            "importance-"
        ):  # layer importance (3 steps, full ViT): gradients as 1 rank reads them
            from lora_recipe import importance_recipe

            from trainers.analysis.importance import measure

            recipe = importance_recipe(out / mode, batch_size=4)  # 2 ranks x 4 = the 1-rank batch of 8
            recipe.launch.deepspeed_config = ds_config or None
            report = measure(setup_run(recipe), 3, progress=False)
            if is_main_process():
                (out / mode / "importance.json").write_text(json.dumps(report.to_dict()))
            reset_between_runs()
            continue
        if mode.startswith("detr-"):
            recipe = detr_lora_recipe(out / mode, batch_size=8, train_json=out / "detr_train.json")
        elif mode.startswith("vitpose-"):
            recipe = vitpose_lora_recipe(out / mode, batch_size=8)  # 2 ranks x 8 = the 1-rank batch of 16
        elif mode.startswith("vit-"):
            recipe = vit_lora_recipe(out / mode, batch_size=8)  # 2 ranks x 8 = the 1-rank batch of 16
        elif mode.startswith("florencefreeze-"):
            recipe = florence_lora_recipe(out / mode, batch_size=4, recipe="florence2_omniparser_freeze.py")
        elif mode.startswith("florence-"):
            recipe = florence_lora_recipe(out / mode, batch_size=4)  # 2 ranks x 4 = the 1-rank batch of 8
        elif mode.startswith("clip-"):
            recipe = stage_clip_recipe(out / mode, batch_size=4)  # 2 ranks x 4 = the 1-rank batch of 8
            changes = LayerChanges()
            recipe.callbacks = [changes.callback]
        else:
            recipe = lora_recipe(out / mode, batch_size=4, train_json=train_json)
        recipe.launch.deepspeed_config = ds_config or None
        ctx = setup_run(recipe)
        assert ctx.trainer.is_deepspeed_enabled == bool(ds_config), mode
        if mode.startswith("clip-local-"):
            ctx.task.loss_scope = "local"
        summary = complete_run(ctx)
        if changes is not None:
            rank = dist.get_rank()
            (out / mode / f"layers_rank{rank}.json").write_text(
                json.dumps({"moved": changes.moved, "stages": summary["stages_opened_at_step"]})
            )
        if is_main_process():
            losses = [e["loss"] for e in ctx.trainer.state.log_history if "loss" in e]
            evals = [e for e in ctx.trainer.state.log_history if "eval_loss" in e]
            (out / mode / "losses.json").write_text(
                json.dumps(
                    {
                        "losses": losses,
                        "world": summary["world_size"],
                        "eval": evals[-1],
                        "predictions": {
                            str(k): v for k, v in sorted(ctx.trainer.evaluator.last_predictions.items())
                        },
                    }
                )
            )
        del ctx
        reset_between_runs()
    if dist.is_initialized() and any(spec.startswith("clip-") for spec in sys.argv[3:]):
        rank = dist.get_rank()
        check = uneven_gather_check(rank, dist.get_world_size())
        (out / f"clip_uneven_gather_rank{rank}.json").write_text(json.dumps(check))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
