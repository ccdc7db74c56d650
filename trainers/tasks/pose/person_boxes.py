"""Where pose prediction on plain images (`python -m trainers.predict`) finds its person boxes.

One of: `--box x,y,w,h` (the same box on every image), `--boxes FILE` (a JSON file of boxes per image: COCO
detection results, `[{"file_name" | "image_id", "bbox": [x, y, w, h], "score", "category_id"}, ...]`, or a
`{"<file name>": [[x, y, w, h], ...]}` mapping), `--detector RUN` (a finished detection run of this project,
run on the same images), or none of them: the whole image is one person box. `--box-threshold` (default 0.5)
drops file entries and detections scoring below it; `--person-label` (default "person") names the detector's
label for people, `--person-category` the COCO results' `category_id` for them when the file holds several.
Everything the options alone can get wrong is refused here, before any model is loaded.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.tasks.interface import FinishedRuns

DEFAULT_THRESHOLD = 0.5
DEFAULT_PERSON_LABEL = "person"
SOURCES = ("box", "boxes", "detector")
FORMATS = (
    'COCO detection results, [{"file_name": "a.jpg", "bbox": [x, y, w, h], "score": 0.9}, ...] ("image_id" '
    'may stand for "file_name": a file name, or the number in a COCO-style name such as 000000000139.jpg), '
    'or a mapping {"a.jpg": [[x, y, w, h], ...]}, boxes in pixels'
)


@dataclass(frozen=True)
class PersonBox:
    """One person's box, x, y, width, height in image pixels; the detection's score when it has one."""

    box: tuple[float, float, float, float]
    score: float | None = None


@dataclass
class BoxOptions:
    """The parsed box options: which source gives the boxes and its settings."""

    source: str | None = None  # "box", "boxes", "detector", or None: the whole image
    box: tuple[float, float, float, float] | None = None
    boxes_file: Path | None = None
    by_file: dict[str, list[PersonBox]] = field(default_factory=dict)  # --boxes: file name -> kept boxes
    detector: Path | None = None
    threshold: float = DEFAULT_THRESHOLD
    person_label: str = DEFAULT_PERSON_LABEL

    @property
    def multi(self) -> bool:
        """Several instances per image (`--boxes`, `--detector`): the output is a list of instances."""
        return self.source in ("boxes", "detector")


def parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise RecipeError(f"--box is x,y,w,h in pixels with a positive width and height, got {text!r}.")
    return box[0], box[1], box[2], box[3]


def parse_box_options(
    options: dict[str, str], files: Sequence[Path] | None, runs: FinishedRuns | None = None
) -> BoxOptions:
    """The box options checked and read (the `--boxes` file included); `files` are the images to predict
    (None where there are no file names: the app), against which the file's names are matched; `runs` reads
    the `--detector` run (`trainers.predict` hands it over)."""
    given = [name for name in SOURCES if options.get(name) is not None]
    if len(given) > 1:
        shown = " and ".join(f"--{name}" for name in given)
        raise RecipeError(
            f"{shown} given together: pass one of --box x,y,w,h (one box on every image), --boxes FILE (boxes "
            "per image from a JSON file) or --detector RUN (boxes from a detection run)."
        )
    parsed = BoxOptions(
        source=given[0] if given else None,
        threshold=_threshold(options.get("box_threshold")),
        person_label=options.get("person_label", DEFAULT_PERSON_LABEL),
    )
    if parsed.source == "box":
        parsed.box = parse_box(options["box"])
    elif parsed.source == "boxes":
        if files is None:
            raise RecipeError(
                "--boxes matches boxes to images by file name, and these images have none (the app): use "
                "python -m trainers.predict RUN --images DIR --boxes FILE, or --box / --detector here."
            )
        parsed.boxes_file = Path(options["boxes"])
        category = _category(options.get("person_category"))
        parsed.by_file = read_boxes_file(parsed.boxes_file, files, parsed.threshold, category)
    elif parsed.source == "detector":
        parsed.detector = Path(options["detector"])
        check_detector(parsed.detector, _given(runs))
    return parsed


def _threshold(text: str | None) -> float:
    if text is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise RecipeError(
            f"--box-threshold is a score in [0, 1] (boxes scoring below it are dropped; default "
            f"{DEFAULT_THRESHOLD}), got {text!r}."
        )
    return value


def _category(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise RecipeError(
            f"--person-category is the category_id of people in the --boxes file (an integer: 1 in COCO), "
            f"got {text!r}."
        ) from None


def read_boxes_file(
    path: Path, files: Sequence[Path], threshold: float, category: int | None
) -> dict[str, list[PersonBox]]:
    """file name -> its person boxes (score >= threshold, of the person category) for every image of `files`
    the file names; each entry is checked and a bad one named by its index or key."""
    from trainers.text_files import read_utf8

    if not path.is_file():
        raise RecipeError(
            f"--boxes {path}: no such file. --boxes names a JSON file of person boxes per image: {FORMATS}."
        )
    try:
        payload = json.loads(read_utf8(path, RecipeError, "--boxes"))
    except json.JSONDecodeError as error:
        raise RecipeError(
            f"--boxes {path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}). Fix "
            f"the file; --boxes takes {FORMATS}."
        ) from None
    names = {file.name: file for file in files}
    if isinstance(payload, list):
        entries = _results_entries(path, payload, names, category)
    elif isinstance(payload, dict):
        entries = _mapping_entries(path, payload)
    else:
        raise RecipeError(
            f"--boxes {path}: the JSON is a {type(payload).__name__}, not a list or an object. --boxes takes {FORMATS}."
        )
    by_file: dict[str, list[PersonBox]] = {}
    keys: dict[str, str] = {}
    for key, box in entries:
        name = Path(key).name  # a path in the file ("imgs/a.jpg") names the image a.jpg of --images
        if keys.setdefault(name, key) != key:
            raise RecipeError(
                f"--boxes {path}: {keys[name]!r} and {key!r} both name an image {name!r}; the images of "
                "--images are matched by file name alone. Keep one of them."
            )
        if box is not None and (box.score is None or box.score >= threshold):
            by_file.setdefault(name, []).append(box)
    if files and keys and not set(keys) & set(names):
        shown = ", ".join(sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
        raise RecipeError(
            f"--boxes {path}: names none of the {len(files)} image(s) of --images (it names {shown}; the "
            f"images are {', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}). Boxes are matched "
            "to images by file name: point --boxes at the file made for these images."
        )
    return by_file


def _checked_bbox(path: Path, where: str, bbox: Any) -> tuple[float, float, float, float]:
    if not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise RecipeError(
            f"--boxes {path}: {where}: bbox {json.dumps(bbox)} is not [x, y, width, height]. Write each box as "
            "four numbers in pixels, COCO's x, y, w, h."
        )
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise RecipeError(
            f"--boxes {path}: {where}: bbox {json.dumps(bbox)} has a non-positive width or height. Fix the box "
            "(boxes are x, y, width, height in pixels, not x1, y1, x2, y2) or remove it."
        )
    return x, y, w, h


def _results_entries(
    path: Path, payload: list[Any], names: dict[str, Path], category: int | None
) -> list[tuple[str, PersonBox | None]]:
    """COCO detection results: (file name, box) per entry; the box None for another category than people."""
    numbered = {int(n.stem): n.name for n in names.values() if n.stem.isdigit()}
    categories = sorted(
        {e["category_id"] for e in payload if isinstance(e, dict) and isinstance(e.get("category_id"), int)}
    )
    if category is None and len(categories) > 1:
        raise RecipeError(
            f"--boxes {path}: holds detections of {len(categories)} categories (category_id "
            f"{', '.join(map(str, categories[:10]))}{', ...' if len(categories) > 10 else ''}); say which are "
            "people with --person-category ID (COCO's person is 1)."
        )
    if category is not None and category not in categories:
        raise RecipeError(
            f"--boxes {path}: no entry has category_id {category} (--person-category); its entries have "
            f"{', '.join(map(str, categories)) or 'no category_id'}. Pass the id of people in this file."
        )
    entries: list[tuple[str, PersonBox | None]] = []
    for i, entry in enumerate(payload):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise RecipeError(
                f"--boxes {path}: {where} is {json.dumps(entry)[:60]}, not an object. A COCO results entry "
                'is {"file_name": "a.jpg", "bbox": [x, y, w, h], "score": 0.9}.'
            )
        image = entry.get("file_name", entry.get("image_id"))
        if isinstance(image, int) and not isinstance(image, bool):
            key = numbered.get(image, str(image))
        elif isinstance(image, str) and image:
            key = image
        else:
            raise RecipeError(
                f'--boxes {path}: {where} names no image (no "file_name" or "image_id"). Give each entry '
                'its image\'s file name, "file_name": "a.jpg".'
            )
        box = _checked_bbox(path, f"{where} ({key})", entry.get("bbox"))
        score = entry.get("score")
        if score is not None and not (isinstance(score, int | float) and not isinstance(score, bool)):
            raise RecipeError(
                f"--boxes {path}: {where} ({key}): score {json.dumps(score)} is not a number. Write the "
                "detection's score (0 to 1) or leave it out."
            )
        person = category is None or entry.get("category_id") == category
        entries.append((key, PersonBox(box, None if score is None else float(score)) if person else None))
    return entries


def _mapping_entries(path: Path, payload: dict[str, Any]) -> list[tuple[str, PersonBox | None]]:
    entries: list[tuple[str, PersonBox | None]] = []
    for key, boxes in payload.items():
        if not isinstance(boxes, list):
            raise RecipeError(
                f"--boxes {path}: {key!r} maps to {json.dumps(boxes)[:60]}, not a list of boxes. Write "
                f'"{key}": [[x, y, w, h], ...] (pixels), [] for an image without people.'
            )
        entries += [(key, PersonBox(_checked_bbox(path, f"{key!r} box {i}", b))) for i, b in enumerate(boxes)]
        if not boxes:
            entries.append((key, None))  # named, no person: matched, but no box
    return entries


def _given(runs: FinishedRuns | None) -> FinishedRuns:
    if runs is None:
        raise RecipeError(
            "--detector RUN is read by python -m trainers.predict (and the app), which load runs."
        )
    return runs


def check_detector(run_dir: Path, runs: FinishedRuns) -> None:
    """`--detector` names a finished run whose family serves detection (read from its recipe.json alone)."""
    from trainers.models.registry import get_family

    recipe = runs.recipe(run_dir, "--detector")
    family = get_family(recipe["model"]["family"])
    if not family.serves("detection"):
        raise RecipeError(
            f"--detector {run_dir}: a run of the {family.name} family ({', '.join(family.tasks)}), not a "
            "detection run. Point --detector at the output folder of a finished detection run (a DETR "
            "recipe's output_dir, e.g. outputs/detr_lora)."
        )


class Detector:
    """A detection run loaded once (through `FinishedRuns.load`: `trainers.predict.load_run`), giving the
    person boxes of images."""

    def __init__(self, run_dir: Path, person_label: str, threshold: float, runs: FinishedRuns | None) -> None:
        self.run_dir, self.threshold = run_dir, threshold
        self.run = _given(runs).load(run_dir, "detection", what="--detector")
        labels = getattr(self.run.model.config, "id2label", None) or {}
        names = [str(labels[i]) for i in sorted(labels)]
        matches = [i for i, n in enumerate(names) if n.lower() == person_label.lower()]
        if not matches:
            raise RecipeError(
                f"--detector {run_dir}: its labels are {', '.join(names) or 'none'}; none is "
                f"{person_label!r}. Pass --person-label NAME with the label that marks people (e.g. "
                f"--person-label {names[0] if names else 'person'})."
            )
        self.label = matches[0]

    def boxes(self, images: list[Any]) -> list[list[PersonBox]]:
        """Each image's detections of the person label scoring >= the threshold, as x, y, w, h boxes."""
        found = self.run.task.predict_images(
            self.run.model, self.run.processor, images, {"threshold": str(self.threshold)}
        )
        return [
            [
                PersonBox((x0, y0, x1 - x0, y1 - y0), float(score))
                for (x0, y0, x1, y1), score, label in zip(p["boxes"], p["scores"], p["labels"], strict=True)
                if label == self.label and x1 > x0 and y1 > y0
            ]
            for p in found
        ]


def say_without_boxes(names: Sequence[str], why: str) -> None:
    """One stderr line naming the images that got no person box (their instances are empty)."""
    if names:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        print(f"pose: no person box {why} for {shown}: no instances for them.", file=sys.stderr)
