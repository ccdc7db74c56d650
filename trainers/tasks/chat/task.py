"""Chat as a `Task`: conversations with images (JSONL or a `datasets` source); the loss on assistant tokens (the model's own causal-LM loss
over the labels the encoder masked); evaluation generates the last answer of each validation conversation
(left-padded, greedy or beam search, `synced_gpus` under ZeRO-3) and scores it against the reference, next to
the most-frequent-answer baseline; the Trainer's eval loss comes from the same validation items (each carries its
training encoding beside the prompt, `trainers.tasks.chat.data.PROMPT`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainers.errors import RecipeError
from trainers.tasks.chat.config import ChatData, ChatEval
from trainers.tasks.chat.metrics import MostFrequentAnswer, answer_scores, most_frequent_answer
from trainers.tasks.interface import TableRow, Task, TaskData

DISTINCT_ANSWERS = "distinct_answers"
DEFAULT_PROMPT = "Describe the image."


def _answers(split: Any, key: str, images: str | None) -> list[str]:
    """The last answers of a split's usable conversations (JSONL or `datasets` source), bad ones left out."""
    from trainers.data.source_config import DatasetSource
    from trainers.data_policy import BadSamples
    from trainers.tasks.chat.conversations import read_conversations
    from trainers.tasks.chat.source import read_source_conversations

    skip = BadSamples("", "skip")
    if isinstance(split, DatasetSource):
        found = read_source_conversations(split, key, skip, check_files=False)
    else:
        found = read_conversations(Path(split), Path(images or Path(split).parent), skip, False)
    return [c.answer for c in found]


class ChatTask(Task[str, ChatData, ChatEval]):
    data_config = ChatData
    eval_config = ChatEval
    greater_is_better = True
    text_options = {"prompt": DEFAULT_PROMPT}  # the app's prompt box; `--prompt` of trainers.predict

    def __init__(self) -> None:
        self.processor: Any = None
        self.evaluation = ChatEval()
        self.train_answers: list[str] = []
        self._scorer: Any = None
        self._custom: Any = None
        self._baselines: dict[int, MostFrequentAnswer] = {}
        self._val_id: int | None = None

    # ------------------------------------------------------------------------------------ recipe level

    def metric_names(self, evaluation: ChatEval | None = None) -> tuple[str, ...]:
        e = evaluation or ChatEval()
        return (*e.metrics, *e.scorer_metrics, DISTINCT_ANSWERS)

    def best_metric(self, evaluation: ChatEval | None = None) -> tuple[str, bool]:
        return (evaluation or ChatEval()).metrics[0], True

    def check_evaluation(self, evaluation: Any) -> None:
        if not isinstance(evaluation, ChatEval):
            raise RecipeError(
                f"the chat task is evaluated with ChatEval(...), got {type(evaluation).__name__}."
            )
        evaluation.validate()

    def metric_hint(self, metric: str, evaluation: ChatEval | None = None) -> str:
        return (
            "The chat task computes the metrics listed in evaluation.metrics (and evaluation.scorer_metrics)."
        )

    def plan_baseline(self, recipe: Any) -> MostFrequentAnswer | None:
        """The most frequent training answer scored on the val answers, from the JSONL files or the `datasets`
        sources alone (no model, no processor, no image decoded)."""
        data: ChatData = recipe.data
        if self.missing_data(recipe):
            return None
        train = _answers(data.train, "data.train", data.images)
        val = _answers(data.val, "data.val", data.val_images or data.images)
        metrics = [m for m in recipe.evaluation.metrics if m in ("exact_match", "answer_f1")]
        if not train or not val or not metrics:
            return None
        return most_frequent_answer(train, val, metrics)

    # --------------------------------------------------------------------------------------- run level

    def build(self, recipe: Any, processor: Any) -> TaskData:
        from trainers.tasks.chat.data import ChatCollator, ChatDataset

        data: ChatData = recipe.data
        if data.max_pixels is not None and hasattr(processor.image_processor, "max_pixels"):
            processor.image_processor.max_pixels = data.max_pixels
            processor.image_processor.size = {
                **processor.image_processor.size,
                "longest_edge": data.max_pixels,
            }
        self.processor, self.evaluation = processor, recipe.evaluation
        train = ChatDataset(data.train, "data.train", processor, data, data.images, data.max_train_samples)
        val = ChatDataset(
            data.val, "data.val", processor, data, data.val_images or data.images, data.max_val_samples, True
        )
        self.train_answers = [c.answer for c in train.samples]
        self._val_id = id(val)
        pad = processor.tokenizer.pad_token_id
        return TaskData(
            train=train, val=val, collator=ChatCollator(pad), eval_collator=ChatCollator(pad, True)
        )

    def _generate(
        self, model: Any, batch: Mapping[str, Any], num_beams: int, max_new_tokens: int
    ) -> list[str]:
        from trainers.zero3 import synced_generation

        tokenizer = self.processor.tokenizer
        generated = model.generate(
            **batch,
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            synced_gpus=synced_generation(),
        )
        new = generated[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def predict(self, model: Any, batch: dict[str, Any]) -> list[str]:
        return self._generate(model, batch, self.evaluation.num_beams, self.evaluation.max_new_tokens)

    def _caption_scorer(self) -> Any:
        wanted = [m for m in self.evaluation.metrics if m in ("rouge_l", "cider_d")]
        if self._scorer is None and wanted:
            from trainers.metrics.captions import CaptionScorer

            self._scorer = CaptionScorer(wanted)
        return self._scorer

    def _custom_scorer(self) -> Any:
        if self._custom is None and self.evaluation.scorer:
            import importlib

            module, _, name = self.evaluation.scorer.partition(":")
            try:
                self._custom = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as error:
                raise RecipeError(
                    f"evaluation.scorer={self.evaluation.scorer!r} cannot be imported ({error})."
                ) from None
        return self._custom

    def score(self, predictions: Mapping[int, str], dataset: Any) -> dict[str, float]:
        order = sorted(predictions)
        texts = [predictions[i] for i in order]
        references = [dataset.samples[i].answer for i in order]
        metrics = answer_scores(self.evaluation.metrics, texts, references, self._caption_scorer())
        custom = self._custom_scorer()
        if custom is not None:
            extra = custom(texts, references)
            missing = [m for m in self.evaluation.scorer_metrics if m not in extra]
            if missing:
                raise RecipeError(
                    f"evaluation.scorer {self.evaluation.scorer!r} returned {sorted(extra)}, not {missing} "
                    "listed in evaluation.scorer_metrics."
                )
            metrics.update({k: float(v) for k, v in extra.items()})
        key = id(dataset)
        if key not in self._baselines and self.train_answers:
            self._baselines[key] = most_frequent_answer(
                self.train_answers,
                [c.answer for c in dataset.samples],
                self.evaluation.metrics,
                self._caption_scorer(),
            )
        if key in self._baselines:
            metrics.update(self._baselines[key].metrics())
        metrics[DISTINCT_ANSWERS] = float(len(Counter(texts)))
        return metrics

    def baseline(self) -> MostFrequentAnswer | None:
        return self._baselines.get(self._val_id) if self._val_id is not None else None

    def examples(self, predictions: Mapping[int, str], dataset: Any, n: int = 10) -> list[dict[str, Any]]:
        return [
            {
                "line": dataset.samples[i].where,
                "question": dataset.samples[i].question,
                "prediction": p,
                "reference": dataset.samples[i].answer,
            }
            for i, p in list(predictions.items())[:n]
        ]

    def table_rows(self, predictions: Mapping[int, str], dataset: Any, n: int = 8) -> list[TableRow]:
        """The conversation's first image; the prompt with the prediction; the reference answer."""
        from trainers.data.images import open_rgb

        rows = []
        for i, p in list(predictions.items())[:n]:
            sample = dataset.samples[i]
            if not sample.images:
                continue
            rows.append(TableRow(open_rgb(sample.images[0]), f"{sample.question} → {p}", sample.answer))
        return rows

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None

    # ---------------------------------------------------------------------------------------- prediction

    def use_evaluation(self, evaluation: ChatEval) -> None:
        self.evaluation = evaluation

    def predict_images(
        self, model: Any, processor: Any, images: list[Any], options: dict[str, str]
    ) -> list[dict]:
        """`{"prompt", "answer"}` per image: the answer the model generates to `options["prompt"]` (default
        "Describe the image.") as the user turn with that image, with the run's generation settings."""
        import torch

        from trainers.tasks.chat.encode import encode_question

        self.processor = processor
        prompt = options.get("prompt", DEFAULT_PROMPT).strip()
        if not prompt:
            raise RecipeError("--prompt is empty: pass the question to ask about each image (--prompt TEXT).")
        device = next(model.parameters()).device
        dtype = next(p.dtype for p in model.parameters() if p.dtype.is_floating_point)
        out = []
        for image in images:
            inputs = encode_question(processor, prompt, image.convert("RGB"))
            batch = {
                k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()
            }
            with torch.no_grad():
                answer = self._generate(
                    model,
                    batch,
                    int(options.get("num_beams", self.evaluation.num_beams)),
                    int(options.get("max_new_tokens", self.evaluation.max_new_tokens)),
                )[0]
            out.append({"prompt": prompt, "answer": answer})
        return out

    def draw(self, image: Any, prediction: dict) -> Any:
        from trainers.tasks.chat.draw import answered

        return answered(image, f"{prediction['prompt']} {prediction['answer']}")
