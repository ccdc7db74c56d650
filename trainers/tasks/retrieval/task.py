"""Image–text retrieval as a `Task`: the cross-rank contrastive loss, embeddings as predictions, R@K scores.

`compute_loss` is the symmetric InfoNCE over the global batch (`trainers.tasks.retrieval.loss`), with the
model's temperature clamped at ln(100) in place before each training step (open_clip clamps after each
optimizer step; this is the same value at every forward). `predict` returns each image's embedding and
those of all its captions; `score` ranks them over the whole gathered set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainers.errors import RecipeError
from trainers.tasks.interface import TableRow, Task, TaskData
from trainers.tasks.retrieval.config import RetrievalData, RetrievalEval
from trainers.tasks.retrieval.data import PairCollator, PairDataset, read_pairs
from trainers.tasks.retrieval.loss import global_contrastive_loss, local_contrastive_loss
from trainers.tasks.retrieval.metrics import (
    MEAN_RECALL,
    ChanceBaseline,
    chance_baseline,
    metric_names,
    ranks,
    retrieval_scores,
)

DEFAULT_MAX_LENGTH = 32
LOGIT_SCALE_MAX = math.log(100.0)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


def _unwrap(model: Any) -> Any:
    """The model inside DDP / a DeepSpeed engine (for the in-place temperature clamp)."""
    while hasattr(model, "module"):
        model = model.module
    return model


class RetrievalTask(Task[dict, RetrievalData, RetrievalEval]):
    """Caption–image retrieval. `loss_scope="local"` uses per-rank negatives only (for comparison)."""

    data_config = RetrievalData
    eval_config = RetrievalEval
    default_best_metric = MEAN_RECALL
    greater_is_better = True
    pipeline_tag = "zero-shot-image-classification"

    def __init__(self, loss_scope: str = "global") -> None:
        if loss_scope not in ("global", "local"):
            raise ValueError(f"loss_scope must be 'global' or 'local', got {loss_scope!r}")
        self.loss_scope = loss_scope
        self._baseline: ChanceBaseline | None = None
        self.plot_queries = RetrievalEval().plot_queries  # the recipe's, once `build` ran

    def _data(self, recipe: Any) -> RetrievalData:
        return self.recipe_data(recipe)

    def metric_names(self, evaluation: Any = None) -> tuple[str, ...]:
        return metric_names((evaluation or RetrievalEval()).recall_at)

    def check_evaluation(self, evaluation: Any) -> None:
        ks = evaluation.recall_at
        if not ks or any(k < 1 for k in ks):
            raise RecipeError(
                f"evaluation.recall_at must list positive K values (e.g. 1,5,10), got {list(ks)}."
            )

    def model_kwargs(self, recipe: Any) -> dict[str, Any]:
        return {"encoder_configs": recipe.encoder_configs} if recipe.encoder_configs is not None else {}

    def plan_baseline(self, recipe: Any) -> Any:
        data = self._data(recipe)
        if not isinstance(data.val, str):  # a `datasets` source: the run computes its baseline
            return None
        try:
            entries = json.loads(Path(data.val).read_text())
        except (OSError, ValueError):
            return None
        counts = [1 if isinstance(c, str) else len(c) for c in list(entries.values())[: data.max_val_samples]]
        return chance_baseline(counts, recipe.evaluation.recall_at) if counts else None

    def baseline(self) -> Any:
        return self._baseline

    # ----------------------------------------------------------------------------------------- run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        data = self._data(recipe)
        text = getattr(recipe.encoder_configs, "text", None)
        max_length = text.max_length if text is not None else DEFAULT_MAX_LENGTH
        images = processor.image_processor
        train = PairDataset(
            read_pairs(data.train, "data.train", data.images, data.max_train_samples),
            images,
            "data.train",
            train=True,
            seed=recipe.training.seed,
        )
        val = PairDataset(
            read_pairs(data.val, "data.val", data.images, data.max_val_samples), images, "data.val"
        )
        self.ks = recipe.evaluation.recall_at
        self.plot_queries = recipe.evaluation.plot_queries
        return TaskData(train=train, val=val, collator=PairCollator(processor.tokenizer, max_length))

    def compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        counts = inputs.get("caption_counts")
        batch = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
        if counts is not None and int(counts.max()) > 1:  # eval batches: each image's first caption
            first = torch.cumsum(counts, 0) - counts
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in batch:
                    batch[key] = batch[key][first]
        if model.training:
            core = _unwrap(model)
            with torch.no_grad():  # open_clip: logit_scale.clamp_(0, ln 100)
                core.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)
        out = model(**batch)
        loss = global_contrastive_loss if self.loss_scope == "global" else local_contrastive_loss
        return loss(out.text_embeds, out.image_embeds, out.logit_scale)

    def predict(self, model: Any, batch: dict[str, Any]) -> list[dict]:
        out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
        texts = out.text_embeds.float().split(batch["caption_counts"].tolist())
        return [
            {"image": img.tolist(), "texts": t.tolist()}
            for img, t in zip(out.image_embeds.float(), texts, strict=True)
        ]

    def score(self, predictions: Mapping[int, dict], dataset: PairDataset) -> dict[str, float]:
        indices = sorted(predictions)
        images = torch.tensor([predictions[i]["image"] for i in indices])
        texts = torch.tensor([t for i in indices for t in predictions[i]["texts"]])
        owner = torch.tensor([n for n, i in enumerate(indices) for _ in predictions[i]["texts"]])
        ks = getattr(self, "ks", RetrievalEval().recall_at)
        if self._baseline is None:
            self._baseline = chance_baseline([len(predictions[i]["texts"]) for i in indices], ks)
        return retrieval_scores(*ranks(images, texts, owner), ks)

    def examples(
        self, predictions: Mapping[int, dict], dataset: PairDataset, n: int = 10
    ) -> list[dict[str, Any]]:
        """For a few images: the caption ranked first among all captions, and the image's own captions."""
        indices = sorted(predictions)
        texts = [(i, c) for i in indices for c in dataset.pairs[i].captions]
        bank = torch.tensor([t for i in indices for t in predictions[i]["texts"]])
        rows = []
        for i in indices[:n]:
            best = int((bank @ torch.tensor(predictions[i]["image"])).argmax())
            rows.append(
                {
                    "file": str(dataset.pairs[i].path),
                    "top_caption": texts[best][1],
                    "top_caption_is_own": texts[best][0] == i,
                    "captions": list(dataset.pairs[i].captions),
                }
            )
        return rows

    def save_artifacts(self, predictions: Mapping[int, dict], dataset: PairDataset, directory: Path) -> None:
        """`retrieval.png`: the first `evaluation.plot_queries` val images' first captions, each with the k
        images it ranks highest (k: the largest R@K up to 5), the caption's own image framed green."""
        from trainers.data.images import open_rgb
        from trainers.tasks.retrieval.draw import QueryRow, retrieval_sheet
        from trainers.tasks.retrieval.table import table_k, text_queries

        k = table_k(getattr(self, "ks", RetrievalEval().recall_at))
        queries = text_queries(predictions, dataset, k, max(0, self.plot_queries))
        if queries:
            rows = [
                QueryRow(caption, [open_rgb(dataset.pairs[f].path) for f in found], [f == i for f in found])
                for i, caption, found in queries
            ]
            retrieval_sheet(rows, directory / "retrieval.png", k)

    def table_rows(self, predictions: Mapping[int, dict], dataset: PairDataset, n: int = 8) -> list[TableRow]:
        """Query images with their top-k captions and query captions with their top-k images, a hit mark each
        (`trainers.tasks.retrieval.table`)."""
        from trainers.tasks.retrieval.table import retrieval_rows

        return retrieval_rows(predictions, dataset, getattr(self, "ks", RetrievalEval().recall_at), n)
