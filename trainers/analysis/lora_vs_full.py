"""The LoRA-vs-full report: what an adapter costs and buys against a full fine-tune of the same recipe.

Per run: trainable parameters and ratio, checkpoint size (adapter vs full weights), final and best value of
the tracked metric, time per epoch and peak memory. Plus "real size" rows computed from an architecture on
the meta device (no weights, no memory): e.g. ViT-B/16 with LoRA r 16 on q/v + classifier, counted both in
closed form and by peft itself on the meta model.

    python -m trainers.analysis.lora_vs_full --lora outputs/vit_lora --full outputs/vit_full --out reports/ \
        --real-size google/vit-base-patch16-224-in21k --num-labels 101
    python -m trainers.analysis.lora_vs_full --recipe recipes/vit_lora.py --demo --out reports/vit_demo

With `--recipe` it runs the recipe twice, in this process, into `<out>/lora` (as declared) and `<out>/full`
(`lora=none`, the full fine-tune), extra `key=value` overrides applied to both, then reads both runs.

A run directory is what a run writes: `training_summary.json` (params, best/final metrics, seconds per
epoch, `lora`), `best/` (the weights: an adapter or a full model) and `peak_memory.json`
(`trainers.reporting.memory.PeakMemoryCallback`) or a `peak_memory` key in the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainers.atomic_files import write_text
from trainers.errors import UserFacingError
from trainers.zero3 import param_numel

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
MB = 1e6


@dataclass
class RunNumbers:
    """One run's row of the report; `kind` is "lora" or "full"."""

    name: str
    kind: str
    trainable_params: int
    total_params: int
    checkpoint_bytes: int
    metric: str
    final_metric: float | None = None
    best_metric: float | None = None
    seconds_per_epoch: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_measure: str | None = None
    run_dir: str | None = None

    @property
    def trainable_ratio(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trainable_ratio": self.trainable_ratio}


@dataclass
class RealSizeRow:
    """Counts of a real architecture, computed on the meta device."""

    model_id: str
    num_labels: int
    lora: str  # "r=16 on q_proj, v_proj + classifier"
    total_params: int
    lora_trainable_params: int  # closed form (what --dry-run reports)
    peft_trainable_params: int  # peft's get_nb_trainable_parameters() on the meta model
    dtype: str = "float32"

    @property
    def full_bytes(self) -> int:
        return self.total_params * BYTES_PER_PARAM[self.dtype]

    @property
    def adapter_bytes(self) -> int:
        return self.lora_trainable_params * BYTES_PER_PARAM[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "full_bytes": self.full_bytes,
            "adapter_bytes": self.adapter_bytes,
            "lora_trainable_ratio": self.lora_trainable_params / self.total_params,
        }


# ------------------------------------------------------------------------------------------- counting


def _suffix_match(name: str, targets: Sequence[str]) -> bool:
    """peft's rule for a `target_modules` list: the module's name is a target or ends in `.target`."""
    return any(name == t or name.endswith(f".{t}") for t in targets)


def lora_param_count(
    model: Any, target_modules: Sequence[str], r: int, modules_to_save: Sequence[str] = ()
) -> int:
    """Trainable parameters of LoRA r on `target_modules` plus the fully trained `modules_to_save`.

    Closed form from module shapes, so it works on the meta device: r * (in + out) per wrapped Linear
    (bias="none"). Targets inside a saved module are trained fully there, not wrapped.
    """
    from torch import nn

    saved = [name for name, _ in model.named_modules() if name and _suffix_match(name, modules_to_save)]
    count = sum(param_numel(p) for name in saved for p in model.get_submodule(name).parameters())
    for name, module in model.named_modules():
        if (
            not name
            or not _suffix_match(name, target_modules)
            or any(name.startswith(f"{s}.") for s in saved)
        ):
            continue
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"{name} is a {type(module).__name__}; only Linear LoRA targets are counted here"
            )
        count += r * (module.in_features + module.out_features)
    return count


def unique_params(model: Any) -> int:
    """Parameters of a model, a tied tensor once (`parameters()` deduplicates)."""
    return sum(param_numel(p) for p in model.parameters())


def real_size_row(
    family: Any,
    model_id: str,
    num_labels: int,
    r: int = 16,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    modules_to_save: Sequence[str] = ("classifier",),
    dtype: str = "float32",
) -> RealSizeRow:
    """The real model's counts, without weights: closed form and peft's own count on the meta device."""
    from peft import LoraConfig, get_peft_model

    model = family.meta_model(model_id, num_labels=num_labels)
    if model is None:
        raise UserFacingError(
            f"--real-size {model_id}: family {family.name!r} does not know this architecture and no local config "
            f"was found; known ids: {', '.join(family.known_ids) or 'none'}."
        )
    total = unique_params(model)
    closed_form = lora_param_count(model, target_modules, r, modules_to_save)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=r, lora_alpha=2 * r, target_modules=list(target_modules), modules_to_save=list(modules_to_save)
        ),
    )
    peft_trainable, _ = peft_model.get_nb_trainable_parameters()
    saved = f" + {', '.join(modules_to_save)}" if modules_to_save else ""
    return RealSizeRow(
        model_id,
        num_labels,
        f"r={r} on {', '.join(target_modules)}{saved}",
        total,
        closed_form,
        int(peft_trainable),
        dtype,
    )


# -------------------------------------------------------------------------------------------- reading


def checkpoint_bytes(directory: Path) -> tuple[int, str]:
    """(bytes of the weight files, "adapter" | "full") of a saved model or adapter directory."""
    if not directory.is_dir():
        raise UserFacingError(
            f"{directory}: no checkpoint directory; the run has not finished or saved elsewhere."
        )
    kind = "adapter" if (directory / ADAPTER_WEIGHTS).is_file() else "full"
    size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if size == 0:
        raise UserFacingError(f"{directory}: holds no weight files ({', '.join(WEIGHT_SUFFIXES)}).")
    return size, kind


def _mean(values: Sequence[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def read_run(run_dir: Path, name: str | None = None) -> RunNumbers:
    """A run directory's numbers (see the module docstring for what it must hold)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "training_summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise UserFacingError(
            f"{summary_path}: not found; pass the output directory of a finished run (it writes training_summary.json)."
        ) from None
    except json.JSONDecodeError as error:
        raise UserFacingError(
            f"{summary_path}: not valid JSON ({error.msg} at line {error.lineno})."
        ) from None
    size, kind = checkpoint_bytes(Path(summary.get("best_model_dir") or run_dir / "best"))
    params = summary.get("params", {})
    lora = summary.get("lora") or {}
    trainable = (
        lora.get("trainable_params_peft")
        or params.get("trainable_at_end")
        or params.get("trainable_at_start")
    )
    metric = (summary.get("best_metric") or {}).get("name") or "loss"
    final = (summary.get("final_metrics") or {}).get(metric)
    best = (summary.get("best_metrics") or {}).get(metric)
    peak = summary.get("peak_memory")
    if peak is None and (run_dir / "peak_memory.json").is_file():
        peak = json.loads((run_dir / "peak_memory.json").read_text())
    return RunNumbers(
        name=name or summary.get("recipe") or run_dir.name,
        kind="lora" if lora or kind == "adapter" else "full",
        trainable_params=int(trainable or 0),
        total_params=int(params.get("total") or 0),
        checkpoint_bytes=size,
        metric=metric,
        final_metric=final,
        best_metric=best,
        seconds_per_epoch=_mean(summary.get("seconds_per_epoch")),
        peak_memory_bytes=peak.get("bytes") if peak else None,
        peak_memory_measure=f"{peak.get('device')}: {peak.get('measure')}" if peak else None,
        run_dir=str(run_dir),
    )


# -------------------------------------------------------------------------------------------- writing


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def render_markdown(runs: Sequence[RunNumbers], real: Sequence[RealSizeRow] = ()) -> str:
    names = " | ".join(f"{r.name} ({r.kind})" for r in runs)
    rule = "|---" * (len(runs) + 1) + "|"
    rows = [
        (
            "trainable params",
            [f"{r.trainable_params:,} ({100 * r.trainable_ratio:.2f}% of {r.total_params:,})" for r in runs],
        ),
        (
            "checkpoint",
            [
                f"{r.checkpoint_bytes / MB:.3f} MB ({'adapter' if r.kind == 'lora' else 'full model'})"
                for r in runs
            ],
        ),
        *[
            (f"{m} {which}", [_fmt(getattr(r, f"{which}_metric"), ".4f") for r in runs])
            for m in sorted({r.metric for r in runs})
            for which in ("final", "best")
        ],
        ("time per epoch", [_fmt(r.seconds_per_epoch, ".2f", " s") for r in runs]),
        (
            "peak memory",
            [
                _fmt(r.peak_memory_bytes / MB if r.peak_memory_bytes else None, ".0f", " MB")
                + (f" ({r.peak_memory_measure})" if r.peak_memory_measure else "")
                for r in runs
            ],
        ),
    ]
    lines = ["# LoRA vs full fine-tune", "", f"| | {names} |", rule]
    lines += [f"| {label} | {' | '.join(cells)} |" for label, cells in rows]
    if real:
        lines += [
            "",
            "## Real size (computed on the meta device, no weights)",
            "",
            "| model | labels | LoRA | trainable (LoRA) | peft's count | full params | adapter | full model |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in real:
            lines.append(
                f"| {row.model_id} | {row.num_labels} | {row.lora} | {row.lora_trainable_params:,} "
                f"({100 * row.lora_trainable_params / row.total_params:.2f}%) | {row.peft_trainable_params:,} | "
                f"{row.total_params:,} | {row.adapter_bytes / MB:.1f} MB | {row.full_bytes / MB:.1f} MB ({row.dtype}) |"
            )
        lines += ["", "Sizes are parameters x bytes per parameter (safetensors headers excluded)."]
    return "\n".join(lines) + "\n"


def write_report(
    runs: Sequence[RunNumbers], out_dir: Path, real: Sequence[RealSizeRow] = ()
) -> tuple[Path, Path]:
    """`lora_vs_full.md` and `lora_vs_full.json` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "lora_vs_full.md", out_dir / "lora_vs_full.json"
    write_text(md, render_markdown(runs, real))
    payload = {"runs": [r.to_dict() for r in runs], "real_size": [r.to_dict() for r in real]}
    write_text(js, json.dumps(payload, indent=2) + "\n")
    return md, js


def run_both(
    recipe_path: str, out: Path, overrides: Sequence[str] = (), demo: bool = False
) -> tuple[Path, Path]:
    """Train the recipe as declared (its LoRA) and with `lora=none`, into `out/lora` and `out/full`."""
    from trainers.errors import RecipeError
    from trainers.recipe import load_recipe
    from trainers.run import run_training

    dirs = {"lora": out / "lora", "full": out / "full"}
    for kind, directory in dirs.items():
        extra = [*overrides, f"output_dir={directory}", *(["lora=none"] if kind == "full" else [])]
        recipe = load_recipe(recipe_path, extra, demo=demo)
        if kind == "lora" and recipe.lora is None:
            raise RecipeError(
                f"{recipe_path}: the recipe has no lora section; the report compares LoRA with full."
            )
        run_training(recipe, extra)
    return dirs["lora"], dirs["full"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, help="output dir of the LoRA run")
    parser.add_argument("--full", type=Path, help="output dir of the full fine-tune")
    parser.add_argument(
        "--recipe", help="run this LoRA recipe and its full fine-tune first (instead of --lora/--full)"
    )
    parser.add_argument("--demo", action="store_true", help="with --recipe: the tiny offline model and data")
    parser.add_argument("overrides", nargs="*", help="with --recipe: key=value overrides for both runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--real-size",
        action="append",
        default=[],
        metavar="MODEL_ID",
        help="add a row counted on the meta device (repeatable)",
    )
    parser.add_argument(
        "--family", default="trainers.models.vit:VIT_CLASSIFICATION", help="module:FamilyEntry"
    )
    parser.add_argument("--num-labels", type=int, default=101)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--modules-to-save", default="classifier")
    args = parser.parse_intermixed_args(argv)
    if (args.recipe is None) == (args.lora is None or args.full is None):
        parser.error("give either --recipe RECIPE or both --lora DIR and --full DIR")
    try:
        if args.recipe is not None:
            args.lora, args.full = run_both(args.recipe, args.out, args.overrides, args.demo)
        runs = [read_run(args.lora, "lora"), read_run(args.full, "full")]
        real = []
        if args.real_size:
            from trainers.models.family import resolve

            family = resolve(args.family)
            targets = [t for t in args.targets.split(",") if t]
            saved = [m for m in args.modules_to_save.split(",") if m]
            real = [
                real_size_row(family, mid, args.num_labels, args.r, targets, saved) for mid in args.real_size
            ]
        md, js = write_report(runs, args.out, real)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
