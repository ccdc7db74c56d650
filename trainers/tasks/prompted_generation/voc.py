"""LabelImg Pascal VOC XML → annotated images, checked, and the three Florence-2 training lines per image.

One `VocImage` per XML file: the image file, its size, its objects (name, optional region description, box in
pixels). A region description is the object's `<description>` element, or a CVAT-style
`<attributes><attribute><name>description</name><value>...</value></attribute></attributes>`, else its name.
Every problem is a `DataError` naming the XML file and the object index.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from trainers.data_policy import DataError
from trainers.tasks.prompted_generation.loc import Group, format_suffix, quantize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class VocObject:
    name: str
    description: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class VocImage:
    xml: Path
    image: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def _text(element: ET.Element | None) -> str | None:
    return element.text.strip() if element is not None and element.text is not None else None


def _description(obj: ET.Element, name: str) -> str:
    direct = _text(obj.find("description"))
    if direct:
        return direct
    for attribute in obj.findall("attributes/attribute"):
        if _text(attribute.find("name")) == "description" and _text(attribute.find("value")):
            return _text(attribute.find("value")) or name
    return name


def _find_image(xml: Path, root: ET.Element, images: Path) -> Path:
    filename = _text(root.find("filename"))
    candidates = [images / filename] if filename else []
    candidates += [images / (xml.stem + s) for s in IMAGE_SUFFIXES]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{xml}: its image {filename or xml.stem + '.*'!r} is not in {images} (looked for "
        f"{', '.join(p.name for p in candidates)}). Put the image there, point --images at its folder, or remove "
        "the XML file (--skip-bad skips it)."
    )


def read_voc(xml: Path, images: Path, classes: Sequence[str] | None = None) -> VocImage:
    """One annotation file, checked: parseable, image present, boxes ordered and inside the image, known classes."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise DataError(
            f"{xml}:{line}: not valid XML ({error}, column {column}). Fix or remove the file "
            "(--skip-bad skips it)."
        ) from None
    image_path = _find_image(xml, root, images)
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except OSError as error:
        raise DataError(
            f"{xml}: its image {image_path} cannot be read ({error}). Replace the image, or remove the XML "
            "file (--skip-bad skips it)."
        ) from None
    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"{xml}: object {index}"
        name = _text(obj.find("name"))
        if not name:
            raise DataError(f"{where} has no <name>. Add the class name or remove the object.")
        if classes is not None and name not in classes:
            raise DataError(
                f"{where}: class {name!r} is not among --classes {', '.join(classes)}. Fix the name "
                "or add it to --classes."
            )
        box = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(_text(box.find(k)) or "") for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise DataError(
                f"{where} ({name!r}): <bndbox> needs numeric xmin, ymin, xmax, ymax. Fix the box."
            ) from None
        if x1 >= x2 or y1 >= y2:
            raise DataError(
                f"{where} ({name!r}): box xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g} has x1 >= x2 "
                "or y1 >= y2. Swap or fix the coordinates."
            )
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise DataError(
                f"{where} ({name!r}): box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the image "
                f"{image_path.name} ({width}x{height}). Fix the box or the <size>."
            )
        objects.append(VocObject(name, _description(obj, name), (x1, y1, x2, y2)))
    return VocImage(xml, image_path, width, height, tuple(objects))


def flip_box(box: Sequence[float], width: int) -> tuple[float, float, float, float]:
    """The box mirrored left-right in an image `width` wide (twice is the identity)."""
    x1, y1, x2, y2 = box
    return (width - x2, y1, width - x1, y2)


def flipped(voc: VocImage, image_path: Path) -> VocImage:
    objects = tuple(replace(o, box=flip_box(o.box, voc.width)) for o in voc.objects)
    return replace(voc, image=image_path, objects=objects)


def _ordered(objects: Sequence[VocObject]) -> list[VocObject]:
    """Reading order (top to bottom, then left to right): one target order for the same picture."""
    return sorted(objects, key=lambda o: (o.box[1], o.box[0], o.box[3], o.box[2]))


def _groups(objects: Sequence[VocObject], size: tuple[int, int], label: str) -> list[Group]:
    ordered = _ordered(objects)
    bins = quantize([o.box for o in ordered], size)
    return [Group(getattr(o, label), (tuple(b),)) for o, b in zip(ordered, bins, strict=True)]  # type: ignore[arg-type]


def grounding_caption(phrases: Sequence[str]) -> str:
    """`wrinkle`, `wrinkle and drop`, `wrinkle, drop and broken`: the caption whose phrases are grounded."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def lines_for(voc: VocImage, image_name: str, tasks: Sequence[str]) -> list[dict[str, str]]:
    """The JSONL records of one image, one per task (an image without objects gets none)."""
    if not voc.objects:
        return []
    size = (voc.width, voc.height)
    out = []
    for task in tasks:
        if task == "OD":
            out.append(
                {
                    "image": image_name,
                    "prefix": "<OD>",
                    "suffix": format_suffix(_groups(voc.objects, size, "name")),
                }
            )
        elif task == "DENSE_REGION_CAPTION":
            out.append(
                {
                    "image": image_name,
                    "prefix": "<DENSE_REGION_CAPTION>",
                    "suffix": format_suffix(_groups(voc.objects, size, "description")),
                }
            )
        elif task == "CAPTION_TO_PHRASE_GROUNDING":
            ordered = _ordered(voc.objects)
            phrases = list(dict.fromkeys(o.name for o in ordered))
            groups = []
            for phrase in phrases:
                mine = [o for o in ordered if o.name == phrase]
                groups.append(Group(phrase, tuple(tuple(b) for b in quantize([o.box for o in mine], size))))  # type: ignore[misc]
            out.append(
                {
                    "image": image_name,
                    "prefix": f"<CAPTION_TO_PHRASE_GROUNDING>{grounding_caption(phrases)}",
                    "suffix": format_suffix(groups),
                }
            )
        else:
            raise ValueError(f"unknown task {task!r}")
    return out
