"""The model card of a finished run: `best/README.md` in the Hugging Face format (YAML metadata + Markdown).

A `best/` directory is what users share (`huggingface-cli upload`, a colleague's disk), so it carries what a
reader needs without the rest of the run: the base model and its revision, the task, how the recipe froze,
unfroze and adapted it, the data it saw (sizes and fingerprints), the best validation and the test metrics
beside the task's no-model baseline, the command that reproduces it and how to load it with stock
transformers / peft. The metadata is written through `huggingface_hub.ModelCardData`, so the Hub's own parser
(`huggingface_hub.ModelCard.load`, `metadata_load`) reads it back; metrics also go into `model-index`, where
the Hub shows them.

Data fingerprints are listings, not content hashes: sha256 over each file's relative path and size (hashing
every image of a large set would cost more than the run's evaluation). Same files, same sizes: same print.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.reporting.redact import redact, redact_text

CARD = "README.md"
NOT_METRICS = ("epoch", "step", "runtime", "samples_per_second", "steps_per_second")


# ------------------------------------------------------------------------------------------------- data


def listing_fingerprint(path: Path) -> dict[str, Any]:
    """`{files, bytes, sha256}` of a file or a folder (every file under it): sha256 of `relpath\\tsize` lines."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest, total = hashlib.sha256(), 0
    for f in files:
        size = f.stat().st_size
        total += size
        name = f.name if f == path else f.relative_to(path).as_posix()
        digest.update(f"{name}\t{size}\n".encode())
    return {"files": len(files), "bytes": total, "sha256": digest.hexdigest()}


def _sources(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(recipe key, a path or a `DatasetSource`-like object) for every source a data field names."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for name, entry in value.items():
            yield from _sources(f"{key}[{name!r}]", entry)
    elif isinstance(value, (list, tuple)):
        for i, entry in enumerate(value):
            yield from _sources(f"{key}[{i}]", entry)
    else:
        yield key, value


def data_fingerprints(data: Any) -> list[dict[str, Any]]:
    """One record per data path the recipe's data class declares (`data_paths`, and the image folder)."""
    fields = [p.field for p in getattr(data, "data_paths", ())]
    if "images" not in fields and hasattr(data, "images"):
        fields.append("images")
    out = []
    for name in fields:
        for key, value in _sources(f"data.{name}", getattr(data, name, None)):
            source = getattr(value, "source", value)  # a mixing entry wraps its source
            kind = getattr(source, "kind", None)
            path = getattr(source, "path", source)
            record: dict[str, Any] = {"key": key, "path": str(path)}
            if kind == "hub":
                record.update(hub_dataset=str(path), revision=getattr(source, "revision", None))
            elif isinstance(path, (str, os.PathLike)) and Path(path).expanduser().exists():
                record.update(listing_fingerprint(Path(path).expanduser()))
            out.append(record)
    return out


# ---------------------------------------------------------------------------------------------- facts


@dataclass
class CardFacts:
    """Everything the card says, gathered by the run (`trainers.run`) on the main process."""

    recipe: dict[str, Any]  # `to_dict(recipe)`, as in recipe.json
    summary: dict[str, Any]  # training_summary.json
    task: str
    family: str
    pipeline_tag: str | None
    model_class: type
    processor_class: type
    split_sizes: dict[str, int]
    data: list[dict[str, Any]]
    command: str | None  # the command that reproduces the run; None: the recipe was built in Python
    base_commit: str | None = None  # the hub commit the base weights came from, when the loader knew it
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # what the base needs for this head (labels)
    baseline_text: str | None = None  # the task's no-model baseline in one line (`Baseline.render()`)


def reproduce_command(recipe_file: str | None, overrides: Sequence[str], demo: bool) -> str | None:
    """`python launch.py RECIPE [--demo] key=value ...`, quoted for a POSIX shell, secrets redacted."""
    if recipe_file is None:
        return None
    parts = ["python", "launch.py", recipe_file, *(["--demo"] if demo else []), *overrides]
    return redact_text(" ".join(shlex.quote(p) for p in parts))


def is_stock(cls: type) -> bool:
    """Whether transformers ships `cls` (the dual encoder's model is this project's subclass of one)."""
    return cls.__module__.startswith("transformers")


def _numbers(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    return {
        k.removeprefix(prefix): float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and k.removeprefix(prefix) not in NOT_METRICS
    }


def metrics_block(summary: Mapping[str, Any], baseline_text: str | None = None) -> dict[str, Any]:
    """Best validation, test and no-model baseline values side by side, by metric name; `baseline_text` is
    the baseline's own one-line description (`Baseline.render()`)."""
    validation = _numbers(summary.get("best_metrics"))
    start = {k: v for k, v in _numbers(summary.get("start_metrics")).items() if k in validation}
    test = _numbers(summary.get("test_metrics"), "test_")
    baseline_report = summary.get("baseline") or {}
    baseline = {k: v for k, v in _numbers(baseline_report).items() if k in validation or k in test}
    best = summary.get("best_metric") or {}
    return {
        "best_metric": best.get("name"),
        "best_epoch": summary.get("best_epoch"),
        "before_training": start,  # the evaluation before the first step (training.eval_on_start)
        "validation": validation,
        "test": test,
        "baseline": baseline,
        "baseline_kind": baseline_text,
        "beats_baseline": baseline_report.get("beats_baseline"),
    }


def training_block(recipe: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's freeze rules, unfreezing stages and LoRA settings, with the parameter counts they gave."""
    lora = recipe.get("lora")
    params = summary.get("params") or {}
    t = recipe.get("training") or {}
    return {
        "freeze": [_rule(r) for r in recipe.get("freeze") or []],
        "stages": [
            {
                "epoch": s["epoch"],
                "unfreeze": s["unfreeze"],
                "lr_mult": s.get("lr_mult"),
                "opened_at_step": (summary.get("stages_opened_at_step") or {}).get(str(i)),
            }
            for i, s in enumerate(recipe.get("stages") or [], start=1)
        ],
        "lora": (
            {
                **{
                    k: lora.get(k)
                    for k in ("r", "dropout", "target_modules", "target_regex", "modules_to_save", "use_dora")
                },
                "alpha": lora["alpha"]
                if lora.get("alpha") is not None
                else 2 * lora["r"],  # peft's lora_alpha
            }
            if lora
            else None
        ),
        "quantization": (recipe.get("model") or {}).get("quantization"),
        "params_total": params.get("total"),
        "params_trainable_at_start": params.get("trainable_at_start"),
        "params_trainable_at_end": params.get("trainable_at_end"),
        "epochs_completed": summary.get("epochs_completed"),
        "global_steps": summary.get("global_steps"),
        "world_size": summary.get("world_size"),
        "lr": t.get("lr"),
        "batch_size": t.get("batch_size"),
        "seed": t.get("seed"),
    }


def _rule(rule: Any) -> str:
    if not isinstance(rule, Mapping):
        return str(rule)
    what = rule.get("target") or f"regex {rule.get('regex')!r}"
    within = f" within {rule['within']}" if rule.get("within") else ""
    return f"{str(rule.get('rule', 'freeze')).lower()} {what}{within}"


# ---------------------------------------------------------------------------------------------- card


def metadata(facts: CardFacts) -> Any:
    """The card's YAML metadata as a `huggingface_hub.ModelCardData`."""
    from huggingface_hub import EvalResult, ModelCardData

    model = facts.recipe.get("model") or {}
    model_id, demo = str(model.get("id")), bool(model.get("use_demo_model"))
    local = Path(model_id).expanduser().exists()
    metrics = metrics_block(facts.summary, facts.baseline_text)
    results = [
        EvalResult(
            task_type=facts.pipeline_tag or facts.task,
            dataset_type="local",
            dataset_name=_split_name(facts.data, split),
            dataset_split=split,
            metric_type=name,
            metric_value=value,
        )
        for split, values in (("validation", metrics["validation"]), ("test", metrics["test"]))
        for name, value in values.items()
    ]
    lora = facts.recipe.get("lora")
    return ModelCardData(
        base_model=None if local else model_id,
        base_model_local_dir=model_id if local else None,
        base_model_revision=model.get("revision") or facts.base_commit or "default branch (not pinned)",
        base_model_commit=facts.base_commit,
        demo_model=demo or None,  # the tiny random-init build of `--demo`, not the hub weights
        library_name="peft" if lora else "transformers",
        pipeline_tag=facts.pipeline_tag,
        tags=[facts.task, facts.family, *(["lora"] if lora else []), "vlm-finetune-launcher"],
        task=facts.task,
        family=facts.family,
        model_class=facts.model_class.__name__,
        model_class_is_stock=is_stock(facts.model_class),
        processor_class=facts.processor_class.__name__,
        recipe=facts.recipe.get("name"),
        training=training_block(facts.recipe, facts.summary),
        data={"samples": facts.split_sizes, "sources": facts.data},
        results=metrics,
        reproduce=facts.command,
        model_name=str(facts.recipe.get("name")),
        eval_results=results or None,
    )


def _split_name(data: Sequence[Mapping[str, Any]], split: str) -> str:
    key = "data.val" if split == "validation" else "data.test"
    return next((Path(d["path"]).name for d in data if d["key"] == key), split)


def _table(metrics: Mapping[str, Any]) -> str:
    names = list(dict.fromkeys([*metrics["validation"], *metrics["test"]]))
    if not names:
        return "No evaluation metrics were recorded."

    def cell(values: Mapping[str, float], name: str) -> str:
        return f"{values[name]:.4g}" if name in values else "—"

    rows = [
        "| metric | before training | validation (best epoch) | test (best model) | no-model baseline |",
        "|---|---|---|---|---|",
        *(
            f"| {'**' + n + '**' if n == metrics['best_metric'] else n} | {cell(metrics['before_training'], n)} | "
            f"{cell(metrics['validation'], n)} | {cell(metrics['test'], n)} | {cell(metrics['baseline'], n)} |"
            for n in names
        ),
    ]
    kind = f" No-model baseline: {metrics['baseline_kind']}." if metrics["baseline_kind"] else ""
    return "\n".join(rows) + f"\n\nBold: the metric that picked the kept checkpoint.{kind}"


def load_snippet(facts: CardFacts) -> str:
    """Python that loads this directory with stock transformers (and peft for an adapter)."""
    model = facts.recipe.get("model") or {}
    model_cls, proc_cls = facts.model_class.__name__, facts.processor_class.__name__
    lines = [f"from transformers import {proc_cls}", ""]
    if is_stock(facts.model_class):
        lines[0] = f"from transformers import {model_cls}, {proc_cls}"
    else:  # this project's class: the stock parent does not load these weights as they are
        lines[1:1] = [
            "from trainers.models.registry import get_family",
            f"{model_cls} = get_family({facts.family!r}).model_class()  # subclasses "
            + next(c.__name__ for c in facts.model_class.__mro__ if is_stock(c)),
        ]
    lines.append(f'processor = {proc_cls}.from_pretrained("path/to/best")')
    if not facts.recipe.get("lora"):
        lines.append(f'model = {model_cls}.from_pretrained("path/to/best")')
        return "\n".join(lines)
    lines.insert(0, "from peft import PeftModel")
    if model.get("use_demo_model"):
        lines += [
            "# this run adapted the tiny random-init demo model (--demo), which is built, not downloaded:",
            "from trainers.predict import load_run",
            'model = load_run("path/to/run_dir").model  # the demo base rebuilt, then PeftModel.from_pretrained',
        ]
        return "\n".join(lines)
    args = [repr(str(model.get("id")))]
    revision = model.get("revision") or facts.base_commit
    if revision:
        args.append(f"revision={revision!r}")
    args += [f"{k}={v!r}" for k, v in facts.model_kwargs.items()]
    if "num_labels" in facts.model_kwargs:  # the hub checkpoint's head may have another size
        args.append("ignore_mismatched_sizes=True")
    lines += [
        f"base = {model_cls}.from_pretrained({', '.join(args)})",
        'model = PeftModel.from_pretrained(base, "path/to/best")  # model.merge_and_unload() for a plain model',
    ]
    return "\n".join(lines)


def render(facts: CardFacts) -> str:
    """The whole card: `---` YAML `---` then the Markdown body."""
    data = metadata(facts)
    metrics, training = data.results, data.training
    model = facts.recipe.get("model") or {}
    demo = (
        " It adapted the tiny random-init demo build (`--demo`), not the hub weights."
        if model.get("use_demo_model")
        else ""
    )
    implicit = ["- freeze * (LoRA: the base starts frozen)"] if training["lora"] else []
    rules = [*implicit, *(f"- {r}" for r in training["freeze"])]
    freeze = "\n".join(rules) or "- none (every parameter trains)"
    stages = (
        "\n".join(
            f"- from epoch {s['epoch']}: unfreeze {s['unfreeze']}"
            + (f" (lr x{s['lr_mult']})" if s["lr_mult"] is not None else "")
            + (f", opened at step {s['opened_at_step']}" if s["opened_at_step"] is not None else "")
            for s in training["stages"]
        )
        or "- none"
    )
    lora = training["lora"]
    lora_line = (
        f"r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']}, targets "
        f"{lora['target_regex'] or ', '.join(lora['target_modules'])}"
        + (f", trained fully: {', '.join(lora['modules_to_save'])}" if lora["modules_to_save"] else "")
        if lora
        else "none (full fine-tune of the unfrozen parameters)"
    )
    sources = "\n".join(
        f"| {d['key']} | `{d['path']}` | {d.get('files', '—')} | {d.get('bytes', '—')} | "
        f"{d.get('sha256', d.get('revision') or '—')} |"
        for d in facts.data
    )
    sizes = ", ".join(f"{k} {v}" for k, v in facts.split_sizes.items())
    command = (
        f"```bash\n{facts.command}\n```"
        if facts.command
        else "The recipe was built in Python, not loaded from a file: its resolved settings are in the run's "
        "`recipe.json`."
    )
    body = f"""
# {facts.recipe.get("name")}: {facts.family} fine-tuned for {facts.task}

Fine-tuned from `{model.get("id")}` (revision {data.base_model_revision}) with vlm-finetune-launcher.{demo}

## Results

{_table(metrics)}

## Training

Trainable parameters: {training["params_trainable_at_start"]} of {training["params_total"]} at the start,
{training["params_trainable_at_end"]} at the end; {training["epochs_completed"]} epochs, {training["global_steps"]}
steps on {training["world_size"]} process(es), lr {training["lr"]}, batch {training["batch_size"]} per process, seed
{training["seed"]}.

Freezing, in order (later rules win):
{freeze}

Unfreezing stages:
{stages}

LoRA: {lora_line}

## Data

Samples per split: {sizes}.

| recipe key | path | files | bytes | fingerprint (sha256 of relative path + size per file) |
|---|---|---|---|---|
{sources}

## Reproduce

{command}

## Load

```python
{load_snippet(facts)}
```
"""
    return f"---\n{data.to_yaml()}\n---\n{redact_text(body)}"


def write_model_card(directory: Path, facts: CardFacts) -> Path:
    """`directory/README.md`, written atomically (it replaces the card peft's `save_pretrained` leaves)."""
    facts.recipe = redact(facts.recipe)
    path = directory / CARD
    tmp = path.with_name(f".{CARD}.tmp")
    tmp.write_text(render(facts))
    os.replace(tmp, path)
    return path
