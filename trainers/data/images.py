"""Where a sample's image lives: a file, or a row of a `datasets` source; one opener for both.

Task records keep an image reference (`path`) and open it only when an item is read. A file is a `Path`;
an image stored in a `datasets` table is a `RowImage`, decoded (by `datasets`, from the memory-mapped Arrow
file) on `open`, so building a split from a source reads no pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True, eq=False)
class RowImage:
    """The image of row `row` of a loaded source (`trainers.data.sources.SourceDataset`) named by `key`;
    `nth` picks one of a row holding several (a list of images, as chat conversations have)."""

    dataset: Any
    row: int
    key: str
    nth: int | None = None

    @property
    def name(self) -> str:
        return f"row {self.row}" + (f" image {self.nth}" if self.nth is not None else "")

    def __str__(self) -> str:
        return f"{self.key} {self.name}"

    def open(self) -> Image.Image:
        return self.dataset.image(self.row) if self.nth is None else self.dataset.image(self.row, self.nth)


ImageRef = Path | RowImage


def open_rgb(ref: ImageRef | str) -> Image.Image:
    """The referenced image decoded as RGB (a file is closed before returning)."""
    if isinstance(ref, RowImage):
        image = ref.open()
        return image if image.mode == "RGB" else image.convert("RGB")
    with Image.open(ref) as image:
        return image.convert("RGB")
