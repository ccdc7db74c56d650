"""The retrieval prediction table (W&B): queries with their top-k retrieved items over the whole evaluated set.

Image→text rows: the query image, its k best-scoring captions (✓ marks the image's own), its own captions.
Text→image rows: the query caption, a strip of its k best-scoring images (the own image framed green, the
others grey), the own image's name. `hit@k` says whether the own item is among the k, as R@k counts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps

from trainers.data.images import open_rgb
from trainers.tasks.interface import TableRow

THUMB = 64  # pixels, the side of each retrieved image in a text→image row
HIT, MISS = (0, 170, 0), (160, 160, 160)


def table_k(ks: Sequence[int]) -> int:
    """The k shown: the largest of the recipe's R@K values up to 5 (a table cell stays readable)."""
    return max([k for k in ks if k <= 5] or [min(ks)])


def _mark(hit: bool) -> str:
    return "✓" if hit else "✗"


def strip(images: Sequence[Image.Image], hits: Sequence[bool]) -> Image.Image:
    """The images side by side as thumbnails, each framed green (hit) or grey."""
    out = Image.new("RGB", (len(images) * (THUMB + 8), THUMB + 8), "white")
    for n, (image, hit) in enumerate(zip(images, hits, strict=True)):
        thumb = ImageOps.pad(image, (THUMB, THUMB), color="white")
        out.paste(ImageOps.expand(thumb, border=4, fill=HIT if hit else MISS), (n * (THUMB + 8), 0))
    return out


def retrieval_rows(
    predictions: Mapping[int, dict], dataset: Any, ks: Sequence[int], n: int = 8
) -> list[TableRow]:
    """`ceil(n/2)` image→text rows then `floor(n/2)` text→image rows (each image's first caption), ranked
    against every image and caption of the evaluated set."""
    indices = sorted(predictions)
    if not indices:
        return []
    pairs = dataset.pairs
    images = torch.tensor([predictions[i]["image"] for i in indices])
    owners = [i for i in indices for _ in predictions[i]["texts"]]
    captions = [c for i in indices for c in pairs[i].captions]
    texts = torch.tensor([t for i in indices for t in predictions[i]["texts"]])
    k = table_k(ks)
    hit_column = f"hit@{k}"
    rows = []
    for i in indices[: (n + 1) // 2]:
        order = (texts @ images[indices.index(i)]).argsort(descending=True)[:k].tolist()
        hit = any(owners[j] == i for j in order)
        shown = "\n".join(f"{_mark(owners[j] == i)} {r}. {captions[j]}" for r, j in enumerate(order, 1))
        rows.append(
            TableRow(
                open_rgb(pairs[i].path),
                shown,
                " | ".join(pairs[i].captions),
                extra={"query": "image → text: this image", hit_column: hit},
            )
        )
    for i, caption, found in text_queries(predictions, dataset, k, n // 2):
        shown = "\n".join(f"{_mark(f == i)} {r}. {pairs[f].path.name}" for r, f in enumerate(found, 1))
        rows.append(
            TableRow(
                strip([open_rgb(pairs[f].path) for f in found], [f == i for f in found]),
                shown,
                pairs[i].path.name,
                extra={"query": f"text → image: {caption}", hit_column: i in found},
            )
        )
    return rows


def text_queries(
    predictions: Mapping[int, dict], dataset: Any, k: int, n: int
) -> list[tuple[int, str, list[int]]]:
    """For the first `n` images: (image index, its first caption, the indices of the `k` images that caption
    ranks highest among all evaluated images, best first); a hit is the image's own index among them."""
    indices = sorted(predictions)
    images = torch.tensor([predictions[i]["image"] for i in indices])
    queries = []
    for i in indices[:n]:
        order = (images @ torch.tensor(predictions[i]["texts"][0])).argsort(descending=True)[:k].tolist()
        queries.append((i, dataset.pairs[i].captions[0], [indices[j] for j in order]))
    return queries
