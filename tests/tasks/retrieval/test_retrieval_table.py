"""The retrieval prediction table: each query with its top-k retrieved items, over the whole evaluated set, and
a hit mark that agrees with the R@k the scorer reports for the same embeddings."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from trainers.tasks.retrieval.data import Pair
from trainers.tasks.retrieval.metrics import ranks, retrieval_scores
from trainers.tasks.retrieval.table import retrieval_rows, table_k


class Pairs:
    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs


def test_hit_marks_agree_with_recall_at_k(tmp_path: Path):
    torch.manual_seed(0)
    n, dim = 8, 6
    pairs = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (20, 10), (30 * i, 0, 0)).save(path)
        pairs.append(Pair(path, (f"caption {i}a", f"caption {i}b"), f"x.json:{i + 1}"))
    images = torch.nn.functional.normalize(torch.randn(n, dim), dim=-1)
    texts = torch.nn.functional.normalize(images.repeat_interleave(2, 0) + torch.randn(2 * n, dim), dim=-1)
    predictions = {
        i: {"image": images[i].tolist(), "texts": texts[2 * i : 2 * i + 2].tolist()} for i in range(n)
    }
    k = table_k((1, 5, 10))
    assert k == 5
    rows = retrieval_rows(predictions, Pairs(pairs), (1, 5, 10), n=2 * n)
    image_rows, text_rows = rows[:n], rows[n:]
    assert len(image_rows) == len(text_rows) == n

    owner = torch.arange(n).repeat_interleave(2)
    t2i, i2t = ranks(images, texts, owner)
    scores = retrieval_scores(t2i, i2t, (k,))
    hits = [r.extra["hit@5"] for r in image_rows]
    assert sum(hits) / n == scores["i2t_r5"]
    assert [r.extra["hit@5"] for r in text_rows] == (t2i[::2] <= k).tolist()  # each image's first caption
    assert 0 < sum(hits) < n  # the case separates hits from misses

    row = image_rows[0]
    shown = row.prediction.splitlines()
    assert len(shown) == k and shown[0].startswith(("✓ 1. caption", "✗ 1. caption"))
    assert any(line.startswith("✓") for line in shown) == row.extra["hit@5"]
    assert all(("✓" in line) == line.split(". ", 1)[1].startswith("caption 0") for line in shown)
    assert row.target == "caption 0a | caption 0b" and row.image.size == (20, 10)

    text_row = text_rows[0]
    assert text_row.extra["query"] == "text → image: caption 0a" and text_row.target == "img0.png"
    assert text_row.image.size == (k * 72, 72)  # k framed thumbnails
    framed_green = [text_row.image.getpixel((n_ * 72 + 1, 1)) == (0, 170, 0) for n_ in range(k)]
    marked = [line.startswith("✓") for line in text_row.prediction.splitlines()]
    assert framed_green == marked and sum(marked) == int(text_row.extra["hit@5"])
