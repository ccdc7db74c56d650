"""Retrieval metrics over a whole evaluation set: R@K both ways, mean and median rank, and their chance level.

Ranks are 1-based; a tie counts in the model's favour only when scores are exactly equal. Text→image: each
caption ranks all images and the rank of its own image counts. Image→text (several captions per image, as in
COCO / Flickr30k evaluation): each image ranks all captions and the best-ranked of its own counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

MEAN_RECALL = "mean_recall"


def metric_names(ks: Sequence[int]) -> tuple[str, ...]:
    recalls = [f"{d}_r{k}" for d in ("t2i", "i2t") for k in ks]
    ranks = [f"{d}_{s}_rank" for d in ("t2i", "i2t") for s in ("mean", "median")]
    return (MEAN_RECALL, *recalls, *ranks)


def ranks(
    images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2i ranks [captions], i2t ranks [images]) from L2-normalised embeddings; `owner[j]` = caption j's image."""
    sim = texts.double() @ images.double().t()  # [captions, images]
    own = sim.gather(1, owner[:, None])  # each caption's score for its own image
    t2i = (sim > own).sum(dim=1) + 1
    best_own = torch.full((images.shape[0],), -math.inf, dtype=sim.dtype).scatter_reduce(
        0, owner, own[:, 0], reduce="amax"
    )
    i2t = (sim > best_own[None, :]).sum(dim=0) + 1
    return t2i, i2t


def retrieval_scores(t2i: torch.Tensor, i2t: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, r in (("t2i", t2i), ("i2t", i2t)):
        for k in ks:
            out[f"{name}_r{k}"] = float((r <= k).double().mean())
        out[f"{name}_mean_rank"] = float(r.double().mean())
        out[f"{name}_median_rank"] = float(r.double().median())
    out[MEAN_RECALL] = sum(out[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in ks) / (2 * len(ks))
    return {MEAN_RECALL: out.pop(MEAN_RECALL), **out}


@dataclass(frozen=True)
class ChanceBaseline:
    """What a model that ranks at random scores on this set (exact expectations, not a sample)."""

    images: int
    captions: int
    scores: dict[str, float]

    def metrics(self) -> dict[str, float]:
        return dict(self.scores)

    def to_dict(self) -> dict:
        return {
            "kind": "random ranking (exact expectation)",
            "images": self.images,
            "captions": self.captions,
            **self.scores,
        }

    def render(self) -> str:
        shown = ", ".join(
            f"{k}={v:.3f}" for k, v in self.scores.items() if k.endswith(("_r1", "mean_recall"))
        )
        return (
            f"baseline:      random ranking over {self.images} val images / {self.captions} captions: {shown} "
            f"(t2i mean rank {self.scores['t2i_mean_rank']:.1f})"
        )


def chance_baseline(captions_per_image: Sequence[int], ks: Sequence[int]) -> ChanceBaseline:
    """Expected R@K and mean rank of a random ranking: t2i R@K = K/N; i2t R@K = 1 - C(M-c, K)/C(M, K) for an
    image with c of the M captions; the median rank is that of the expected per-item rank distribution."""
    n, m = len(captions_per_image), sum(captions_per_image)
    scores: dict[str, float] = {}
    for k in ks:
        scores[f"t2i_r{k}"] = min(k, n) / n
        scores[f"i2t_r{k}"] = sum(1 - math.comb(m - c, k) / math.comb(m, k) for c in captions_per_image) / n
    scores["t2i_mean_rank"] = (n + 1) / 2
    scores["i2t_mean_rank"] = sum((m + 1) / (c + 1) for c in captions_per_image) / n
    scores[MEAN_RECALL] = sum(scores[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in ks) / (2 * len(ks))
    return ChanceBaseline(n, m, {MEAN_RECALL: scores.pop(MEAN_RECALL), **scores})
