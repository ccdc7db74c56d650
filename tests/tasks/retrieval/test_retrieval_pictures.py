"""`eval/retrieval.png`, written by the retrieval task's `save_artifacts` hook after each evaluation: read back,
each row is a text query with its top-k images, and the green frames fall exactly where the caption's own image
is among the k, as the scorer's text->image ranks say."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from trainers.tasks.retrieval.config import RetrievalEval
from trainers.tasks.retrieval.data import Pair
from trainers.tasks.retrieval.draw import HIT, MISS, QueryRow, retrieval_sheet
from trainers.tasks.retrieval.metrics import ranks
from trainers.tasks.retrieval.task import RetrievalTask


class Pairs:
    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs


def test_frames_mark_the_hits_the_ranks_say(tmp_path: Path):
    torch.manual_seed(0)
    n, dim = 12, 6
    pairs = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (24, 16), (20 * i, 100, 200 - 10 * i)).save(path)
        pairs.append(Pair(path, (f"caption {i} first", f"caption {i} second"), f"x.json:{i + 1}"))
    images = torch.nn.functional.normalize(torch.randn(n, dim), dim=-1)
    texts = torch.nn.functional.normalize(
        images.repeat_interleave(2, 0) + 2.0 * torch.randn(2 * n, dim), dim=-1
    )
    predictions = {
        i: {"image": images[i].tolist(), "texts": texts[2 * i : 2 * i + 2].tolist()} for i in range(n)
    }
    task = RetrievalTask()
    task.ks, task.plot_queries = (1, 5, 10), 6
    task.save_artifacts(predictions, Pairs(pairs), tmp_path / "eval")
    written = Image.open(tmp_path / "eval" / "retrieval.png").convert("RGB")

    t2i, _ = ranks(images, texts, torch.arange(n).repeat_interleave(2))
    first_caption_rank = t2i[::2][:6].tolist()  # each image's first caption, the first 6 images
    assert 0 < sum(r <= 5 for r in first_caption_rank) < 6  # the case has hits and misses

    # Rebuild the rows from the ranking: the sheet drawn from them is the hook's, pixel for pixel.
    rows = []
    for i in range(6):
        order = (images @ texts[2 * i]).argsort(descending=True)[:5].tolist()
        rows.append(
            QueryRow(
                pairs[i].captions[0], [Image.open(pairs[j].path) for j in order], [j == i for j in order]
            )
        )
    layout = retrieval_sheet(rows, tmp_path / "direct.png", k=5)
    assert written.size == layout.size and len(layout.frames) == 6 and all(len(f) == 5 for f in layout.frames)
    assert written.tobytes() == Image.open(tmp_path / "direct.png").convert("RGB").tobytes()

    for i, frames in enumerate(layout.frames):
        colours = [written.getpixel((box[0] + 1, box[1] + 1)) for box in frames]
        assert set(colours) <= {HIT, MISS}
        green = [c == HIT for c in colours]
        rank = first_caption_rank[i]
        assert green == [r == rank for r in range(1, 6)], (i, rank, colours)  # green at the own image's rank

    task.plot_queries = 0
    task.save_artifacts(predictions, Pairs(pairs), tmp_path / "none")
    assert not (tmp_path / "none" / "retrieval.png").exists()
    assert RetrievalEval().plot_queries == 6
