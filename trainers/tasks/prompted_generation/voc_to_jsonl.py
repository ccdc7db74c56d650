"""LabelImg Pascal VOC XML or a YOLO export → Florence-2 JSONL (`{"image", "prefix", "suffix"}`), one line per
task per image.

    python -m trainers.tasks.prompted_generation.voc_to_jsonl --voc data/fabric/Annotations --images data/fabric/JPEGImages \
        --out data/fabric/train.jsonl --tasks OD,DENSE_REGION_CAPTION,CAPTION_TO_PHRASE_GROUNDING --flip

Boxes become `<loc_N>` bins exactly as the native processor quantizes them (`trainers.tasks.prompted_generation.loc`).
`--flip` also writes a mirrored copy `flipped_<name>` of each image next to it, with mirrored boxes. Image paths
in the JSONL are relative to `--images`. A bad file (bad XML, x1 > x2, a box outside the image, a missing image,
a class outside `--classes`) stops the conversion with a message naming it; `--skip-bad` skips and counts it.

`--yolo DATA_YAML --split train` (instead of `--voc`) reads a YOLO detection export (`trainers.data.yolo`: its
label lines checked and refused by file and line as the detection task does); the class names are the
data.yaml's `names` and also serve as region descriptions. `--images` is then optional: image paths are
written relative to it when given, else absolute.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps
from tqdm import tqdm

from trainers.atomic_files import atomic_open, atomic_path, reported_as_paragraph
from trainers.data_policy import DataError
from trainers.errors import UserFacingError
from trainers.tasks.prompted_generation.voc import VocImage, VocObject, flipped, lines_for, read_voc

TASKS = ("OD", "DENSE_REGION_CAPTION", "CAPTION_TO_PHRASE_GROUNDING")


def _tasks(text: str) -> list[str]:
    tasks = [t.strip().strip("<>") for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise DataError(
            f"--tasks {text!r}: unknown task(s) {unknown or '(none given)'}; choose from {', '.join(TASKS)}."
        )
    return tasks


def _mirrored(xml: Path, image_path: Path) -> Image.Image:
    """The image decoded and mirrored; a file whose header reads but whose pixels do not is a bad file too."""
    try:
        with Image.open(image_path) as image:
            return ImageOps.mirror(image.convert("RGB"))
    except OSError as error:
        raise DataError(
            f"{xml}: its image {image_path} cannot be decoded ({error}). Replace the image, or remove the XML "
            "file (--skip-bad skips it)."
        ) from None


def convert(
    voc_dir: Path,
    images: Path,
    out: Path,
    tasks: Sequence[str],
    flip: bool = False,
    classes: Sequence[str] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write the JSONL; returns counts (images, lines, skipped, flipped)."""
    xmls = sorted(Path(voc_dir).glob("*.xml"))
    if not xmls:
        raise DataError(f"{voc_dir}: no .xml files (--voc). Point --voc at the LabelImg Annotations folder.")
    counts: Counter[str] = Counter()
    if out.is_dir():
        raise DataError(
            f"--out {out}: is a directory; --out names the JSONL file to write (e.g. --out {out / 'train.jsonl'})."
        )
    with _written(out) as handle:  # the previous --out stays as it was until the conversion succeeds
        for xml in tqdm(xmls, desc="VOC -> JSONL", unit="file", disable=not progress):
            try:
                voc = read_voc(xml, Path(images), classes)
                mirror = _mirrored(xml, voc.image) if flip else None
            except DataError as error:
                if not skip_bad:
                    raise
                counts["skipped"] += 1
                print(f"skipped: {error}", file=sys.stderr)
                continue
            records = lines_for(voc, voc.image.relative_to(images).as_posix(), tasks)
            if mirror is not None:
                target = voc.image.with_name(f"flipped_{voc.image.name}")
                with _written_path(target) as tmp:
                    mirror.save(tmp)
                records += lines_for(flipped(voc, target), target.relative_to(images).as_posix(), tasks)
                counts["flipped"] += 1
            for record in records:
                handle.write(json.dumps(record) + "\n")
            counts["images"] += 1
            counts["lines"] += len(records)
    return {k: counts[k] for k in ("images", "lines", "skipped", "flipped")}


def yolo_images(path: Path, split: str, skip_bad: bool = False) -> list[VocImage]:
    """The images of one split of a YOLO export as `VocImage`s (boxes in corner pixels, described by class)."""
    from trainers.data.yolo import read_yolo
    from trainers.data_policy import BadSamples

    bad = BadSamples(str(path), "skip" if skip_bad else "fail")
    payload = read_yolo(path, f"data.{split}", bad)
    for example in bad.examples:
        print(f"skipped: {example['where']}: {example['message']}", file=sys.stderr)
    names = {c["id"]: c["name"] for c in payload["categories"]}
    by_image: dict[int, list[VocObject]] = {}
    for ann in payload["annotations"]:
        x, y, w, h = ann["bbox"]
        name = names[ann["category_id"]]
        by_image.setdefault(ann["image_id"], []).append(VocObject(name, name, (x, y, x + w, y + h)))
    return [
        VocImage(path, Path(e["file_name"]), e["width"], e["height"], tuple(by_image.get(e["id"], ())))
        for e in payload["images"]
    ]


def convert_yolo(
    path: Path,
    split: str,
    out: Path,
    tasks: Sequence[str],
    images: Path | None = None,
    skip_bad: bool = False,
) -> dict[str, int]:
    """Write the JSONL of one YOLO split; returns counts (images, lines, skipped, flipped)."""
    counts: Counter[str] = Counter()
    if out.is_dir():
        raise DataError(
            f"--out {out}: is a directory; --out names the JSONL file to write (e.g. --out {out / 'train.jsonl'})."
        )
    with _written(out) as handle:  # the previous --out stays as it was until the conversion succeeds
        for voc in yolo_images(path, split, skip_bad):
            name = (
                voc.image.relative_to(images.resolve()).as_posix() if images is not None else str(voc.image)
            )
            records = lines_for(voc, name, tasks)
            for record in records:
                handle.write(json.dumps(record) + "\n")
            counts["images"] += 1
            counts["lines"] += len(records)
    return {k: counts[k] for k in ("images", "lines", "skipped", "flipped")}


@contextmanager
def _written(out: Path) -> Iterator[IO[str]]:
    """`out` opened for writing, replaced only when the block succeeds; a failed write as one paragraph."""
    with reported_as_paragraph(out, "run the conversion again"), atomic_open(out) as handle:
        yield handle


@contextmanager
def _written_path(target: Path) -> Iterator[Path]:
    with reported_as_paragraph(target, "run the conversion again"), atomic_path(target) as tmp:
        yield tmp


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--voc", type=Path, help="folder of LabelImg .xml files")
    source.add_argument("--yolo", type=Path, help="a YOLO export's data.yaml (or a split's image folder)")
    parser.add_argument(
        "--split", default="train", help="with --yolo: the data.yaml entry (train, val, test)"
    )
    parser.add_argument("--images", type=Path, help="folder of the images (--voc: required)")
    parser.add_argument("--out", type=Path, required=True, help="the JSONL to write")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--flip", action="store_true", help="also write mirrored flipped_ copies")
    parser.add_argument("--classes", default=None, help="comma-separated allowed class names")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip and count bad files instead of stopping"
    )
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if args.yolo is not None:
        counts = convert_yolo(args.yolo, args.split, args.out, _tasks(args.tasks), args.images, args.skip_bad)
    elif args.images is None:
        parser.error("--voc needs --images (the folder of the images)")
    else:
        counts = convert(
            args.voc, args.images, args.out, _tasks(args.tasks), args.flip, classes, args.skip_bad
        )
    out(
        f"wrote {args.out}: {counts['lines']} lines from {counts['images']} images"
        f" ({counts['flipped']} flipped copies, {counts['skipped']} bad files skipped)"
    )
    return counts


def run() -> None:
    """The command line: a bad file ends in its one-paragraph message and the data error's exit status."""
    try:
        main()
    except UserFacingError as error:  # a bad file, or an --out that cannot be written
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    run()
