"""The shipped sample sets rewritten as `datasets` datasets with `save_to_disk` (offline, images embedded), the
way users keep them: one row per image with an `objects` list (boxes, classes, keypoints), image-text pairs,
prefix/suffix rows. A task reading one of these must give the items of its own files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import datasets

from conftest import ROOT

TINY_BOXES = ROOT / "data" / "tiny_boxes"
STICK = ROOT / "data" / "stick_figures"
PAIRS = ROOT / "data" / "shape_pairs"
FABRIC = ROOT / "data" / "fabric"


def _coco_rows(path: Path, images: Path, limit: int, corners: bool = False) -> tuple[dict, list[str]]:
    payload = json.loads(path.read_text())
    categories = sorted(payload["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    by_image: dict[int, list[dict]] = {}
    for ann in payload["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    rows: dict[str, list] = {"image": [], "objects": []}
    for entry in payload["images"][:limit]:
        anns = by_image.get(entry["id"], [])
        boxes = [list(map(float, a["bbox"])) for a in anns]
        if corners:
            boxes = [[x, y, x + w, y + h] for x, y, w, h in boxes]
        rows["image"].append(str(images / entry["file_name"]))
        rows["objects"].append(
            {
                "bbox": boxes,
                "category": [index[a["category_id"]] for a in anns],
                "keypoints": [[float(v) for v in a.get("keypoints", [])] for a in anns],
            }
        )
    return rows, [c["name"] for c in categories]


def coco_disk(directory: Path, root: Path, files: dict[str, str], limit: int, corners: bool = False) -> Path:
    """A COCO JSON pair (detection or keypoints) as a DatasetDict: image, objects{bbox, category, keypoints}."""
    datasets.disable_progress_bars()
    splits = {}
    for split, file in files.items():
        rows, names = _coco_rows(root / file, root / "images", limit, corners)
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "objects": {
                    "bbox": datasets.List(datasets.List(datasets.Value("float64"))),
                    "category": datasets.List(datasets.ClassLabel(names=names)),
                    "keypoints": datasets.List(datasets.List(datasets.Value("float64"))),
                },
            }
        )
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def pairs_disk(directory: Path, limit: int) -> Path:
    """data/shape_pairs' caption files as a DatasetDict: image, captions (a list per image)."""
    datasets.disable_progress_bars()
    splits = {}
    for split, file in (("train", "train.json"), ("validation", "val.json")):
        items = list(json.loads((PAIRS / file).read_text()).items())[:limit]
        splits[split] = datasets.Dataset.from_dict(
            {
                "image": [str(ROOT / "data" / "shapes" / "images" / name) for name, _ in items],
                "captions": [[c] if isinstance(c, str) else c for _, c in items],
            },
            features=datasets.Features(
                {"image": datasets.Image(), "captions": datasets.List(datasets.Value("string"))}
            ),
        )
    datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def prompted_disk(directory: Path, limit: int) -> Path:
    """data/fabric's JSONL files as a DatasetDict of Florence-style rows: image, prefix, suffix."""
    datasets.disable_progress_bars()
    splits = {}
    for split, file, folder in (("train", "train.jsonl", "train"), ("validation", "val.jsonl", "val")):
        lines = [json.loads(line) for line in (FABRIC / file).read_text().splitlines() if line.strip()][
            :limit
        ]
        splits[split] = datasets.Dataset.from_dict(
            {
                "image": [str(FABRIC / folder / "JPEGImages" / r["image"]) for r in lines],
                "prefix": [r["prefix"] for r in lines],
                "suffix": [r["suffix"] for r in lines],
            },
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "prefix": datasets.Value("string"),
                    "suffix": datasets.Value("string"),
                }
            ),
        )
    datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def edited_train_split(saved: Path, directory: Path, edit: Callable[[dict[str, list]], None]) -> Path:
    """`saved`'s train split as a DatasetDict of its own, its columns (as Python lists) changed by `edit` first,
    with the same features: a set with one bad row and the others as they were."""
    table = datasets.load_from_disk(str(saved))["train"]
    rows = table.to_dict()
    edit(rows)
    bad = datasets.Dataset.from_dict(rows, features=table.features)
    datasets.DatasetDict({"train": bad}).save_to_disk(str(directory))
    return directory


def coco_captions(path: Path, captions: dict[str, str | list[str]]) -> Path:
    """`{file: caption(s)}` written as a COCO captions file (captions_*.json: images + annotations)."""
    images, annotations = [], []
    for image_id, (name, value) in enumerate(captions.items(), 1):
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 64})
        for text in [value] if isinstance(value, str) else value:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": text})
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}, indent=1))
    return path


def yolo_export(directory: Path, limit: int, roboflow: bool = False) -> Path:
    """data/tiny_boxes' first `limit` train / val images as a YOLO export: data.yaml, images/<split>/ and
    labels/<split>/*.txt (Roboflow's layout with `roboflow`: <split>/images/, <split>/labels/); returns data.yaml."""
    import shutil

    import yaml

    names = None
    for split, file in (("train", "train.json"), ("val", "val.json")):
        payload = json.loads((TINY_BOXES / file).read_text())
        categories = sorted(payload["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(categories)}
        names = [c["name"] for c in categories]
        images = directory / (f"{split}/images" if roboflow else f"images/{split}")
        labels = directory / (f"{split}/labels" if roboflow else f"labels/{split}")
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for entry in payload["images"][:limit]:
            shutil.copy(TINY_BOXES / "images" / entry["file_name"], images / entry["file_name"])
            w, h = entry["width"], entry["height"]
            lines = [
                f"{index[a['category_id']]} {(x + bw / 2) / w:.9f} {(y + bh / 2) / h:.9f} {bw / w:.9f} {bh / h:.9f}"
                for a in payload["annotations"]
                if a["image_id"] == entry["id"]
                for x, y, bw, bh in [a["bbox"]]
            ]
            (labels / entry["file_name"]).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    config = (
        {"train": "../train/images", "val": "../val/images", "nc": len(names), "names": names}
        if roboflow
        else {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    )
    (directory / "data.yaml").write_text(yaml.safe_dump(config))
    return directory / "data.yaml"
