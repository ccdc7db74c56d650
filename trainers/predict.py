"""Predict on plain images with a finished run: `python -m trainers.predict RUN_DIR --images DIR --out preds.jsonl`.

    python -m trainers.predict outputs/detr_lora --images imgs/ --out preds.jsonl --draw [--threshold 0.3]

An image that cannot be read is skipped, named on stderr and counted (`--on-bad-image fail` stops instead).

The run's best model is loaded back the way a run's outputs are meant to be used: a LoRA run's `best/` is a
stock peft adapter, put on the base the run started from (the hub / local model, or the recipe's tiny demo
model rebuilt from its spec and seed) with `PeftModel.from_pretrained`; a full run's `best/` is a plain
`from_pretrained` directory. The family (from the run's `recipe.json`) names the task; the task's
`predict_images` hook gives one JSON line per image and its `draw` hook the drawn image (`--draw`: PNGs in
`<out stem>_drawn/`). Extra `--key value` pairs go to the task as options (detection: `--threshold`; pose:
`--box`, `--boxes FILE`, `--detector RUN`, `--box-threshold`, `--person-label`, `--person-category`), checked
by its `check_options` hook before any model is loaded.
Generative tasks generate with the run's own evaluation settings (beams, lengths, penalties from its
recipe.json), so a prediction here is what the run's evaluation would have produced for that image.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import re
import sys
import tempfile
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from trainers.atomic_files import atomic_path, reported_as_paragraph
from trainers.errors import RecipeError, UserFacingError
from trainers.tasks.interface import FinishedRuns

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BEST = "best"


@dataclass
class LoadedRun:
    model: Any
    processor: Any
    task: Any
    recipe: dict[str, Any]


def run_recipe(run_dir: Path, what: str = "RUN_DIR") -> dict[str, Any]:
    """A finished run's `recipe.json`; `what` names the argument that gave `run_dir` in the messages."""
    path = run_dir / "recipe.json"
    if not path.is_file():
        raise RecipeError(
            f"{run_dir}: no recipe.json; {what} must be a run's output directory (the recipe's "
            "output_dir, e.g. outputs/detr_lora), as a finished training run leaves it."
        )
    if not (run_dir / BEST).is_dir():
        raise RecipeError(
            f"{run_dir / BEST}: not found; the run has not finished (its best model is written at the "
            f"end of training). Point {what} at a finished run, or let this run complete (rerunning its "
            "command resumes it)."
        )
    return json.loads(path.read_text())


def _task(family: Any, name: str | None) -> Any:
    from trainers.tasks.interface import load_task
    from trainers.tasks.registry import TASKS

    if name is None:
        if len(family.tasks) != 1:
            raise RecipeError(
                f"family {family.name!r} serves {', '.join(family.tasks)}: say which with --task."
            )
        name = family.tasks[0]
    family.check_serves(name, "--task")
    return load_task(TASKS[name])


def _check_hooks(task: Any) -> None:
    """A task without the plain-image hook fails before any model is loaded (its default says why)."""
    from trainers.tasks.interface import Task

    if type(task).predict_images is Task.predict_images:
        task.predict_images(None, None, [], {})


def _build(cls: type, values: Any) -> Any:
    """A dataclass from its `to_dict` view (nested dataclass fields rebuilt where the type says so)."""
    if not isinstance(values, dict):
        return values
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints.get(f.name)
        nested = [t for t in typing.get_args(hint) or (hint,) if is_dataclass(t)]
        kwargs[f.name] = _build(nested[0], value) if nested and isinstance(value, dict) else value
    return cls(**kwargs)


def _demo_spec(family: Any, values: dict[str, Any]) -> Any:
    """The family's tiny-model spec (the type its `tiny` builder takes) from the recipe.json values."""
    builder = family.build_tiny()
    annotation = (
        inspect.signature(builder).parameters["spec"].annotation
    )  # a string under postponed annotations
    names = re.findall(r"[A-Za-z_]\w*", annotation) if isinstance(annotation, str) else [annotation]
    candidates = [builder.__globals__.get(n) if isinstance(n, str) else n for n in names]
    spec_cls = next((t for t in candidates if isinstance(t, type) and is_dataclass(t)), None)
    if spec_cls is None:
        raise RecipeError(
            f"family {family.name!r}: its tiny builder names no spec dataclass; cannot rebuild the demo base."
        )
    return _build(spec_cls, values)


def load_run(
    run_dir: str | Path,
    task_name: str | None = None,
    options: dict[str, str] | None = None,
    files: Sequence[Path] | None = None,
    what: str = "RUN_DIR",
) -> LoadedRun:
    """The run's best model (eval mode, CPU), its processor and task. With `options`, the task checks them
    (`check_options`, against the image `files`) before any model is loaded."""
    from trainers.models.registry import get_family

    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir, what)
    model_section = recipe["model"]
    family = get_family(model_section["family"])
    task = _task(family, task_name)
    _check_hooks(task)
    task.finished_runs = FinishedRuns(run_recipe, load_run)  # pose's --detector loads a detection run
    if options is not None:
        task.check_options(dict(options), list(files or []))
    eval_config = getattr(task.data_config, "eval_config", None)
    if eval_config is not None and isinstance(recipe.get("evaluation"), dict):
        task.use_evaluation(_build(eval_config, recipe["evaluation"]))  # the run's generation settings
    best = run_dir / BEST
    model_cls, processor_cls = family.model_class(), family.processor_class()
    processor = processor_cls.from_pretrained(str(best))
    if not (best / "adapter_config.json").is_file():  # a full fine-tune: a plain from_pretrained directory
        return LoadedRun(model_cls.from_pretrained(str(best)).eval(), processor, task, recipe)
    from trainers.lora.export import load_adapter_model

    return LoadedRun(
        load_adapter_model(load_base(recipe, family, task), best).eval(), processor, task, recipe
    )


def load_base(recipe: dict[str, Any], family: Any, task: Any) -> Any:
    """The model the run started from: the tiny demo model rebuilt from its spec and seed, or the hub / local
    model (a head it initialises drawn after `set_seed(training.seed)`, as the run drew it)."""
    from transformers import set_seed

    from trainers.models.hub import LoadOptions

    model_section = recipe["model"]
    data = _build(task.data_config, recipe["data"])
    labels = task.model_kwargs(SimpleNamespace(data=data))
    seed = recipe["training"]["seed"]
    if model_section.get("use_demo_model"):
        return family.build_tiny()(_demo_spec(family, model_section["demo"]), seed=seed, **labels)[0]
    options = LoadOptions(
        dtype=model_section.get("dtype"),
        revision=model_section.get("revision"),
        trust_remote_code=model_section.get("trust_remote_code", False),
    )
    set_seed(seed)
    return family.load()(model_section["id"], options, **labels)[0]


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise RecipeError(
            f"--images {folder}: not a directory. Point --images at a folder of images "
            f"({', '.join(IMAGE_SUFFIXES)})."
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RecipeError(
            f"--images {folder}: holds no images ({', '.join(IMAGE_SUFFIXES)}). Add images or point "
            "--images at another folder."
        )
    return files


def parse_options(extra: Sequence[str]) -> dict[str, str]:
    """`--key value` pairs (also `--key=value`) → {"key": "value"}."""
    options: dict[str, str] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) < 3:
            raise RecipeError(
                f"unexpected argument {item!r}: extra options are --key value pairs (e.g. --threshold 0.3)."
            )
        key, eq, value = item[2:].partition("=")
        if not eq:
            if not items or items[0].startswith("--"):
                raise RecipeError(f"option --{key} needs a value (e.g. --{key} 0.3).")
            value = items.pop(0)
        options[key.replace("-", "_")] = value
    return options


def check_out(out: Path) -> None:
    """`--out` names a file in a folder this process can write, checked before any model is loaded."""
    if out.is_dir():
        raise RecipeError(
            f"--out {out}: is a directory; --out names the JSON Lines file to write (e.g. --out "
            f"{out / 'preds.jsonl'})."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise RecipeError(
            f"--out {out}: cannot write in {out.parent} ({error.strerror or error}). Point --out at a file in "
            "a writable folder."
        ) from None


def read_image(path: Path) -> Any:
    """The image as RGB, or the reason PIL cannot decode it (a str)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def predict(
    run_dir: str | Path,
    images: str | Path,
    out: str | Path,
    draw: bool = False,
    options: dict[str, str] | None = None,
    batch_size: int = 8,
    task_name: str | None = None,
    on_bad_image: str = "skip",
) -> list[dict]:
    """Predict every image of the folder; writes `out` (JSON lines: file + prediction) and, with `draw`, PNGs.

    An image PIL cannot read is skipped, named on stderr and counted (`on_bad_image="skip"`, the default: one
    bad file among thousands should not cost the others), or stops the run naming it (`"fail"`). A folder
    whose images are all unreadable is an error either way.
    """
    if batch_size < 1:
        raise RecipeError(f"--batch-size {batch_size}: must be >= 1 (images per forward pass; default 8).")
    if on_bad_image not in ("skip", "fail"):
        raise RecipeError(f"--on-bad-image {on_bad_image!r}: must be skip or fail.")
    out = Path(out)
    files = image_files(Path(images))
    check_out(out)
    run = load_run(run_dir, task_name, dict(options or {}), files)
    drawn = out.with_name(f"{out.stem}_drawn")
    rows: list[dict] = []
    skipped: list[str] = []
    for start in range(0, len(files), batch_size):
        chunk, pictures = [], []
        for path in files[start : start + batch_size]:
            picture = read_image(path)
            if isinstance(picture, str):
                if on_bad_image == "fail":
                    raise RecipeError(
                        f"{path}: cannot read the image ({picture}). Replace or remove the file, or pass "
                        "--on-bad-image skip to predict the others and count it."
                    )
                print(f"skipped {path}: cannot read the image ({picture})", file=sys.stderr)
                skipped.append(str(path))
                continue
            chunk.append(path)
            pictures.append(picture)
        if not chunk:
            continue
        predictions = run.task.predict_files(run.model, run.processor, pictures, chunk, dict(options or {}))
        for path, picture, prediction in zip(chunk, pictures, predictions, strict=True):
            rows.append({"file": str(path), **prediction})
            if draw:
                drawn.mkdir(exist_ok=True)
                _write(
                    drawn / f"{path.stem}.png",
                    lambda tmp, p=picture, r=prediction: run.task.draw(p, r).save(tmp),
                )
    if not rows:
        raise RecipeError(
            f"--images {images}: none of its {len(files)} image(s) can be read (first: {skipped[0]}). "
            "Replace the files or point --images at another folder."
        )
    _write(out, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    return rows


def _write(target: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename onto `target`: a failed or interrupted write keeps the previous file whole."""
    with reported_as_paragraph(target, "run the prediction again"), atomic_path(target) as tmp:
        write(tmp)


def main(argv: list[str] | None = None) -> int:
    from trainers.lazy_imports import quiet_bitsandbytes_import

    quiet_bitsandbytes_import()
    parser = argparse.ArgumentParser(prog="python -m trainers.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's output directory")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("--out", type=Path, default=Path("preds.jsonl"), help="JSON lines, one per image")
    parser.add_argument(
        "--draw", action="store_true", help="also write the images with the predictions drawn"
    )
    parser.add_argument("--task", default=None, help="the task, when the family serves several")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--on-bad-image",
        choices=("skip", "fail"),
        default="skip",
        help="an image that cannot be read: skip it, name it and count it (default), or stop",
    )
    args, extra = parser.parse_known_args(argv)
    try:
        rows = predict(
            args.run_dir,
            args.images,
            args.out,
            args.draw,
            parse_options(extra),
            args.batch_size,
            args.task,
            args.on_bad_image,
        )
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = f"; drawn in {args.out.with_name(args.out.stem + '_drawn')}" if args.draw else ""
    skipped = len(image_files(args.images)) - len(rows)
    unread = f"; {skipped} unreadable image(s) skipped (named above)" if skipped else ""
    print(f"{len(rows)} images predicted -> {args.out}{where}{unread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
