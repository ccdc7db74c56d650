"""Reading a YOLO detection export (Ultralytics / Roboflow layout) as the COCO detection payload tasks check.

Layout: `data.yaml` (`names`: a list, or a {index: name} map; `train` / `val` / `test`: image folders relative
to its `path` or its own folder), image folders named `images` (`images/train/`, or Roboflow's
`train/images/`), and beside each image a label file found as Ultralytics finds it: the last `images` folder
of the path replaced by `labels`, the suffix by `.txt`. A label line is `class cx cy w h`, the box centre and
size as fractions of the image; an image without a label file has no boxes.

A split is named either by the `data.yaml` (the recipe key picks its entry: data.train → `train`, data.val →
`val`, data.test → `test`) or by its image folder (class names from the nearest `data.yaml` above it).
Refused, naming `file:line`: a line that is not five numbers, a class index outside `names`, a box that is
not inside [0, 1] or has no size. What is wrong goes through the split's bad-sample policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.data.coco import header_size
from trainers.data_policy import BadSamples, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
HINT = (
    "a YOLO export holds data.yaml (names: [...], train: images/train, val: images/val) and, per image, "
    "labels/<split>/<image>.txt with one 'class cx cy w h' line per box (fractions of the image)"
)
TOLERANCE = 1e-3  # fractions a box may overhang the image (rounding in exported labels)


def is_yolo(path: Path) -> bool:
    """A `.yaml` / `.yml` file or a folder names a YOLO split (a COCO JSON is a `.json` file)."""
    return path.suffix in (".yaml", ".yml") or path.is_dir()


def _split_of(key: str) -> str:
    return {"data.train": "train", "data.val": "val", "data.test": "test"}.get(key, key.rsplit(".", 1)[-1])


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise DataError(
            f"{path}:{line}: not valid YAML ({getattr(error, 'problem', error)}). Fix it; {HINT}."
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}:1: a YOLO data.yaml is a mapping; {HINT}.")
    return loaded


def class_names(path: Path) -> list[str]:
    """The `names` of a data.yaml, in class-index order."""
    names = read_yaml(path).get("names")
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        names = [names[i] for i in sorted(names)] if sorted(names) == list(range(len(names))) else None
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise DataError(
            f"{path}: names must list the classes, distinct, by index (names: [cat, dog] or names: {{0: cat, "
            f"1: dog}}); got {read_yaml(path).get('names')!r}."
        )
    return [str(n) for n in names]


def locate(path: Path, key: str) -> tuple[Path, Path]:
    """(image folder, data.yaml) of the split that recipe key `key` names by `path` (a data.yaml or a folder)."""
    if path.is_dir():
        for parent in (path, *path.parents[:3]):
            for name in ("data.yaml", "data.yml"):
                if (parent / name).is_file():
                    return path, parent / name
        raise DataError(
            f"{path}: {key} is an image folder, but no data.yaml (the class names) is above it; {HINT}."
        )
    config = read_yaml(path)
    split = _split_of(key)
    entry = config.get(split) or (config.get("valid") if split == "val" else None)
    if not isinstance(entry, str):
        raise DataError(
            f"{path}: {key} names this data.yaml, which has no {split!r} entry (an image folder); {HINT}."
        )
    base = Path(config["path"]) if isinstance(config.get("path"), str) else Path(".")
    base = base if base.is_absolute() else path.parent / base
    folder = (base / entry).resolve()
    if not folder.is_dir() and (path.parent / entry).is_dir():  # Roboflow writes ../train/images
        folder = (path.parent / entry).resolve()
    if not folder.is_dir() and entry.startswith("../") and (path.parent / entry[3:]).is_dir():
        folder = (path.parent / entry[3:]).resolve()
    if not folder.is_dir():
        raise DataError(
            f"{path}: the {split!r} image folder {entry!r} ({folder}) does not exist ({key}); {HINT}."
        )
    return folder, path


def label_file(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    index = max(i for i, p in enumerate(parts) if p == "images") if "images" in parts[:-1] else None
    if index is None:
        return image.with_suffix(".txt")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_yolo(path: Path, key: str, bad: BadSamples) -> dict[str, Any]:
    """The split as a COCO detection payload (absolute `file_name`s, pixel xywh boxes, categories by index)."""
    folder, config = locate(path, key)
    names = class_names(config)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images in the {_split_of(key)!r} image folder ({key}); {HINT}.")
    for image_id, file in enumerate(files, 1):
        size = header_size(file)
        if isinstance(size, str):
            bad.report("corrupt_image", str(file), f"cannot read the image ({size})", "Replace the file")
            continue
        boxes = _labels(label_file(file), len(names), size, bad)
        if boxes is None:
            continue
        images.append({"id": image_id, "file_name": str(file), "width": size[0], "height": size[1]})
        for category, box in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": box}
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _labels(
    path: Path, count: int, size: tuple[int, int], bad: BadSamples
) -> list[tuple[int, list[float]]] | None:
    """(class, pixel xywh box) per line of a label file ([] when there is none); None once a line is reported."""
    if not path.is_file():
        return []
    width, height = size
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 5 or not values[0].is_integer():
            bad.report(
                "malformed_line",
                where,
                f"{line.strip()!r} is not 'class cx cy w h' (an integer class and four numbers)",
                "Fix that line (segmentation polygons are not boxes: export the dataset in YOLO detection format)",
            )
            return None
        category, cx, cy, w, h = int(values[0]), *values[1:]
        if not 0 <= category < count:
            bad.report(
                "unknown_category",
                where,
                f"class {category} is not among the {count} names of data.yaml (0 to {count - 1})",
                "Fix the class index or the names in data.yaml",
            )
            return None
        t = TOLERANCE
        if w <= 0 or h <= 0 or cx - w / 2 < -t or cy - h / 2 < -t or cx + w / 2 > 1 + t or cy + h / 2 > 1 + t:
            bad.report(
                "box_outside_image",
                where,
                f"box cx={cx:g} cy={cy:g} w={w:g} h={h:g} is empty or not inside the image (fractions 0 to 1)",
                "Fix the box: YOLO boxes are centre x, centre y, width, height as fractions of the image size",
            )
            return None
        x0, y0 = max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height)
        x1, y1 = min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height)
        out.append((category, [x0, y0, x1 - x0, y1 - y0]))
    return out
