"""How far training moved each module: ‖θ_end − θ_start‖ / ‖θ_start‖ per layer group.

    python -m trainers.analysis.param_change outputs/vit_lora [--out DIR] [--base DIR] [--quiet]

θ_start is the model the run started from (`trainers.predict.load_base`: the tiny demo model rebuilt from
its spec and seed, or the hub / local model; `--base DIR` names a `from_pretrained` directory instead),
checked against the fingerprint the run recorded (`start_weights.json`) before anything is measured.
θ_end is the run's best model (`best/`). For a LoRA run the change of a wrapped weight is the adapter's own
delta, `get_delta_weight` = B @ A * scale (peft), modules trained fully (`modules_to_save`) are their trained
copy against the original, and the rest of the base is unchanged: a frozen module shows exactly 0.

Writes `param_change.json` (per layer and per parameter), `param_change.md` and `param_change.png` in
`--out` (default `RUN_DIR/analysis`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainers.analysis.layers import group_names, original_name
from trainers.atomic_files import atomic_path, write_text
from trainers.errors import RecipeError, UserFacingError

logger = logging.getLogger(__name__)

RESULT = "param_change"


@dataclass
class Change:
    name: str  # a layer group or a parameter
    delta_norm: float
    start_norm: float
    params: int

    @property
    def relative(self) -> float:
        return (
            self.delta_norm / self.start_norm
            if self.start_norm
            else (0.0 if self.delta_norm == 0 else math.inf)
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative": self.relative}


@dataclass
class ChangeReport:
    run_dir: str
    kind: str  # "full" | "lora"
    base: str  # where θ_start came from
    verified: bool  # θ_start matched the run's recorded start_weights.json
    layers: list[Change]
    parameters: list[Change]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "kind": self.kind,
            "base": self.base,
            "verified": self.verified,
            "layers": [c.to_dict() for c in self.layers],
            "parameters": [c.to_dict() for c in self.parameters],
        }


def _state(model: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def lora_end_deltas(peft_model: Any, start: dict[str, Any]) -> dict[str, Any]:
    """θ_end − θ_start per original parameter name of a peft model put on the base whose weights are `start`."""
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, Any] = {}
    for name, param in peft_model.named_parameters():
        if (
            ".lora_" in name or ".original_module." in name
        ):  # adapter factors (below); the frozen original copy
            continue
        key = original_name(name)
        if key in start:
            deltas[key] = param.detach() - start[key]
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            key = original_name(f"{name}.weight")
            for adapter in module.active_adapters:
                deltas[key] = deltas[key] + module.get_delta_weight(adapter).detach().to(deltas[key].dtype)
    return deltas


def full_end_deltas(end_model: Any, start: dict[str, Any]) -> dict[str, Any]:
    end = dict(end_model.named_parameters())
    missing = sorted(set(start) - set(end))
    if missing:
        raise RecipeError(
            f"the best model lacks {len(missing)} parameter(s) of the base, e.g. {missing[:3]}; "
            "is --base the model this run started from?"
        )
    return {name: end[name].detach() - start[name] for name in start}


def summarise(deltas: dict[str, Any], start: dict[str, Any]) -> tuple[list[Change], list[Change]]:
    """Per-parameter and per-layer changes, in the model's own order."""
    import torch

    def norm(t: Any) -> float:
        return float(torch.linalg.vector_norm(t.double()))

    params = [Change(n, norm(deltas[n]), norm(start[n]), start[n].numel()) for n in start]
    groups = group_names(start)
    layers: dict[str, list[float]] = {}
    for c in params:
        acc = layers.setdefault(groups[c.name], [0.0, 0.0, 0])
        acc[0] += c.delta_norm**2
        acc[1] += c.start_norm**2
        acc[2] += c.params
    return [Change(k, math.sqrt(d), math.sqrt(s), int(n)) for k, (d, s, n) in layers.items()], params


def measure(run_dir: Path, base_dir: Path | None = None, task_name: str | None = None) -> ChangeReport:
    from trainers import predict
    from trainers.models.registry import get_family
    from trainers.reporting.start_weights import mismatches

    run_dir = Path(run_dir)
    recipe = predict.run_recipe(run_dir)
    family = get_family(recipe["model"]["family"])
    task = predict._task(family, task_name)
    best = run_dir / predict.BEST
    if base_dir is not None:
        base = family.model_class().from_pretrained(str(base_dir))
        where = str(base_dir)
    else:
        base = predict.load_base(recipe, family, task)
        where = (
            "tiny demo model rebuilt from its spec, seed " + str(recipe["training"]["seed"])
            if recipe["model"].get("use_demo_model")
            else recipe["model"]["id"]
        )
    wrong = mismatches(base, run_dir)
    if wrong:
        raise RecipeError(
            f"{run_dir / 'start_weights.json'}: the base ({where}) is not the model this run started from: "
            f"{len(wrong)} parameter(s) differ in size or norm, e.g. {', '.join(wrong[:3])}. Pass the run's "
            "starting model with --base DIR (a from_pretrained directory)."
        )
    if wrong is None:
        logger.warning(
            "%s records no start_weights.json (an older run, ZeRO-3 or quantized): the base is not "
            "checked against the run's start",
            run_dir,
        )
    start = _state(base)
    lora = (best / "adapter_config.json").is_file()
    if lora:
        from trainers.lora.export import load_adapter_model

        deltas = lora_end_deltas(load_adapter_model(base, best), start)
    else:
        deltas = full_end_deltas(family.model_class().from_pretrained(str(best)), start)
    layers, params = summarise(deltas, start)
    return ChangeReport(str(run_dir), "lora" if lora else "full", where, wrong is not None, layers, params)


def render_table(report: ChangeReport) -> str:
    lines = [
        f"# Parameter change: {report.run_dir} ({report.kind})",
        "",
        f"Relative change ‖θ_end − θ_start‖ / ‖θ_start‖ per layer; θ_start: {report.base}"
        f" ({'checked against the run' if report.verified else 'not checked: no start_weights.json'}); "
        "θ_end: best/.",
        "",
        "| layer | relative change | ‖Δ‖ | ‖θ_start‖ | params |",
        "|---|---|---|---|---|",
    ]
    for c in report.layers:
        lines.append(
            f"| {c.name} | {c.relative:.4g} | {c.delta_norm:.4g} | {c.start_norm:.4g} | {c.params:,} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: ChangeReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.layers[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    ax.barh([c.name for c in rows], [c.relative for c in rows], color="tab:orange")
    ax.set_xlabel("‖θ_end − θ_start‖ / ‖θ_start‖")
    ax.set_title(f"parameter change per layer ({report.kind})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_report(report: ChangeReport, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{RESULT}.json", "md": out / f"{RESULT}.md", "png": out / f"{RESULT}.png"}
    write_text(paths["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    write_text(paths["md"], render_table(report))
    plot(report, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.analysis.param_change", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_dir", type=Path, help="a finished run's output directory")
    parser.add_argument("--out", type=Path, help="where the report goes (default: RUN_DIR/analysis)")
    parser.add_argument("--base", type=Path, help="the run's starting model, a from_pretrained directory")
    parser.add_argument("--task", help="the task, when the family serves several")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING)
    try:
        report = measure(args.run_dir, args.base, args.task)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    out = args.out or args.run_dir / "analysis"
    write_report(report, out)
    print(render_table(report))
    print(f"wrote {out / RESULT}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
