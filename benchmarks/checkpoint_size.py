"""Checkpoint size: the LoRA adapter vs the full model, measured at demo size, computed at real size.

Demo size: `best/` as a run writes it (`trainers.lora.export.save_adapter`: LoRA + modules_to_save tensors)
against a full fine-tune's `save_model` of the same recipe (`lora=none`), weight files only; each against
theory (float32 bytes of the LoRA and modules_to_save tensors; of every unique parameter for the full model),
the rest is the safetensors header. Real size: the same theory on the real architecture (meta device),
prepared as a run prepares it. Claims from the project's brief are listed next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Result, main_for, table
from benchmarks.demo import RECIPES as SHIPPED
from benchmarks.demo import demo_context, demo_recipe, real_recipe, scratch
from benchmarks.shipped_recipes import keyed_by_family, one_per_family
from trainers.lora.export import directory_bytes, save_adapter

MB = 1e6
RECIPES = one_per_family(SHIPPED.values(), where=lambda r: r.lora)  # one LoRA recipe per model family
CLAIMS = {"vit": (330, 10), "detr": (160, 15), "vitpose": (330, 15)}  # by family: full MB -> adapter MB
SKIPPED: list[dict[str, str]] = []  # every claimed model has a recipe


def demo_sizes(key: str) -> dict[str, Any]:
    ctx = demo_context(key)
    plan = ctx.prepared.lora
    adapter_dir = scratch(f"{key}_adapter")
    save_adapter(
        ctx.trainer.model, adapter_dir, ctx.prepared.processor, is_main=True, bias=ctx.recipe.lora.bias
    )
    adapter = directory_bytes(adapter_dir)
    full_recipe = demo_recipe(key, ["lora=none"])
    full_recipe.param_groups = []  # groups addressing the adapter (blip_lora's "lora_") have nothing to match
    full_ctx = demo_context(key, recipe=full_recipe)
    full_dir = scratch(f"{key}_full")
    full_ctx.trainer.save_model(str(full_dir))
    full = directory_bytes(full_dir)
    full_theory = 4 * sum(p.numel() for p in full_ctx.prepared.model.parameters())
    return {
        "adapter_bytes": adapter,
        "adapter_theory_bytes": plan.adapter_bytes,
        "adapter_vs_theory": adapter / plan.adapter_bytes,
        "full_bytes": full,
        "full_theory_bytes": full_theory,
        "full_vs_theory": full / full_theory,
        "adapter_vs_full": adapter / full,
        "lora_params": plan.lora_params,
        "modules_to_save_params": plan.saved_module_params,
    }


def real_sizes(key: str) -> dict[str, Any]:
    from trainers.plan import load_model, prepare_model

    recipe = real_recipe(key)  # the demo's data files (label count), the recipe's own data policies
    model, processor, source = load_model(recipe, meta_ok=True)
    full = 4 * sum(p.numel() for p in model.parameters())
    plan = prepare_model(model, processor, source, recipe).lora
    return {
        "model_id": recipe.model.id,
        "adapter_bytes": plan.adapter_bytes,
        "full_bytes": full,
        "adapter_vs_full": plan.adapter_bytes / full,
        "lora_params": plan.lora_params,
        "modules_to_save_params": plan.saved_module_params,
    }


def run(smoke: bool, out: Path) -> Result:
    """Checkpoint size: adapter vs full model (demo measured, real computed) next to the stated claims."""
    keys = ("vit_lora",) if smoke else RECIPES
    rows = [{"recipe": k, "demo": demo_sizes(k), "real": real_sizes(k)} for k in keys]
    md_rows = []
    for r in rows:
        d, real = r["demo"], r["real"]
        claim = keyed_by_family(CLAIMS, SHIPPED[r["recipe"]].family)
        md_rows.append(
            [
                r["recipe"],
                d["adapter_bytes"] / 1e3,
                d["full_bytes"] / 1e3,
                d["adapter_vs_theory"],
                d["full_vs_theory"],
                real["model_id"].split("/")[-1],
                real["full_bytes"] / MB,
                real["adapter_bytes"] / MB,
                f"{real['adapter_vs_full']:.2%}",
                f"~{claim[0]} MB → ~{claim[1]} MB" if claim else "—",
            ]
        )
    for s in SKIPPED:
        md_rows.append(
            [s["model"], "—", "—", "—", "—", "—", "—", "—", "—", f"{s['claim']} (skipped: {s['reason']})"]
        )
    md = table(
        [
            "recipe",
            "demo adapter kB",
            "demo full kB",
            "adapter / theory",
            "full / theory",
            "real model",
            "real full MB",
            "real adapter MB",
            "adapter / full",
            "claim",
        ],
        md_rows,
    )
    md += (
        "\n\nReal sizes are float32 (4 bytes per parameter), with the label count of the demo data (the real "
        "data is not here); a bf16/fp16 checkpoint is half. Theory = float32 bytes of the LoRA and "
        "modules_to_save tensors (adapter) or of every unique parameter (full); the excess is the safetensors "
        "header and tied-weight aliases."
    )
    return Result(
        "checkpoint_size", "4. Checkpoint size", smoke, [], {"recipes": rows, "skipped": SKIPPED}, md
    )


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
