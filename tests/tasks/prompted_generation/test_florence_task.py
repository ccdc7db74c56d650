"""The Florence-2 task: the JSONL dataset and its bad inputs, collators, curriculum order, the parsing of
generations (malformed output counted), the scores against pycocotools run independently, predict/draw."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from trainers.data_policy import DataError
from trainers.models.florence2 import build_tiny_florence2, build_tiny_processor
from trainers.tasks.prompted_generation.config import PromptedData
from trainers.tasks.prompted_generation.data import PromptedCollator, PromptedDataset, Sample
from trainers.tasks.prompted_generation.loc import Group, quantize
from trainers.tasks.prompted_generation.scoring import (
    dense_metrics,
    grounding_recall,
    od_metrics,
    parse_generation,
    score_all,
)

FABRIC = ROOT / "data" / "fabric"
GOOD = {"image": "a.jpg", "prefix": "<OD>", "suffix": "drop<loc_100><loc_200><loc_300><loc_400>"}


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


def write(tmp_path, *records, raw: str | None = None):
    shutil.copy(next((FABRIC / "val" / "JPEGImages").glob("*.jpg")), tmp_path / "a.jpg")
    path = tmp_path / "val.jsonl"
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    path.write_text(text if raw is None else raw)
    return path


def dataset(path, processor, **data):
    config = PromptedData(train=str(path), val=str(path), **data)
    return PromptedDataset(path, "data.val", processor, config, None, order=config.order)


BAD = {
    "malformed line": ("{not json", r"val\.jsonl:2: not valid JSON"),
    "loc_1000": (
        {**GOOD, "suffix": "drop<loc_1000><loc_1><loc_2><loc_3>"},
        r'val\.jsonl:2: key "suffix": <loc_1000> at character 4 is not in the vocabulary',
    ),
    "loc count": (
        {**GOOD, "suffix": "drop<loc_1><loc_2><loc_3>wrinkle<loc_1><loc_2><loc_3><loc_4>"},
        r'val\.jsonl:2: key "suffix": label \'drop\' is followed by 3 location token\(s\)',
    ),
    "unknown task": ({**GOOD, "prefix": "<SEGMENT>"}, r'val\.jsonl:2: key "prefix": unknown task token'),
    "missing image": ({**GOOD, "image": "gone.jpg"}, r'val\.jsonl:2: key "image": .*gone\.jpg not found'),
    "prompt too long": (
        {**GOOD, "prefix": "<CAPTION_TO_PHRASE_GROUNDING>" + "drop and wrinkle " * 20},
        r'val\.jsonl:2: key "prefix": the prompt is \d+ tokens \(37 image tokens.*data\.max_length=80',
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_lines_name_the_file_line_and_key(tmp_path, processor, case):
    record, pattern = BAD[case]
    path = write(tmp_path, GOOD, record)
    with pytest.raises(DataError, match=pattern):
        dataset(path, processor, max_length=80)
    skipped = dataset(path, processor, max_length=80, on_bad_sample="skip")
    assert len(skipped) == 1 and skipped.bad_samples.skipped == 1


def test_items_prompt_from_processor_labels_from_tokenizer_and_masked_padding(tmp_path, processor):
    grounding = {
        "image": "a.jpg",
        "prefix": "<CAPTION_TO_PHRASE_GROUNDING>drop and wrinkle",
        "suffix": "drop<loc_1><loc_2><loc_3><loc_4>wrinkle<loc_5><loc_6><loc_7><loc_8><loc_9><loc_9><loc_9><loc_9>",
    }
    ds = dataset(write(tmp_path, GOOD, grounding), processor)
    items = [ds[0], ds[1]]
    tokenizer = processor.tokenizer
    assert (
        items[1]["labels"].tolist() == tokenizer(grounding["suffix"])["input_ids"]
    )  # a separate tokenizer call
    assert "Locate the phrases in the caption: drop and wrinkle" in tokenizer.decode(items[1]["input_ids"])
    batch = PromptedCollator(tokenizer.pad_token_id)(items)
    short = int(items[0]["attention_mask"].sum())
    assert batch["attention_mask"][0, short:].sum() == 0 and batch["attention_mask"][1].all()
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][0, len(items[0]["labels"]) :] == -100).all()
    meta = PromptedCollator(tokenizer.pad_token_id, with_meta=True)(items)
    assert "labels" not in meta and meta["tasks"] == ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>"]
    assert meta["image_sizes"][0] == Image.open(tmp_path / "a.jpg").size


def test_curriculum_orders_tasks_per_epoch_and_the_trainer_reads_it_in_order(processor):
    from trainers.trainer import RecipeTrainer

    path = FABRIC / "train.jsonl"
    config = PromptedData(train=str(path), val=str(path), max_train_samples=None)
    ds = PromptedDataset(
        path,
        "data.train",
        processor,
        config,
        FABRIC / "train" / "JPEGImages",
        limit=60,
        order="curriculum",
        seed=3,
    )
    tasks = [ds.sample(i).task for i in range(len(ds))]
    assert tasks == sorted(
        tasks, key=["<OD>", "<DENSE_REGION_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>"].index
    )
    first = [ds.sample(i).where for i in range(len(ds))]
    ds.set_epoch(1)
    second = [ds.sample(i).where for i in range(len(ds))]
    assert first != second and sorted(first) == sorted(second)
    sampler = RecipeTrainer._get_train_sampler(SimpleNamespace(train_dataset=ds), None)
    assert isinstance(sampler, torch.utils.data.SequentialSampler)
    shuffled = PromptedDataset(
        path, "data.train", processor, config, FABRIC / "train" / "JPEGImages", limit=6
    )
    assert not shuffled.ordered


def test_generations_are_parsed_by_the_processor_and_malformed_ones_counted(processor):
    good = parse_generation(processor, "</s><s>drop<loc_0><loc_0><loc_499><loc_999></s>", "<OD>", (100, 50))
    assert good["boxes"] == [[0.0, 0.0, 49.0, 49.0]] and good["labels"] == ["drop"] and not good["malformed"]
    cut = parse_generation(processor, "</s><s>drop<loc_0><loc_0><loc_499>", "<OD>", (100, 50))
    assert cut["malformed"] and "truncated" in cut["reason"] and cut["boxes"] == []
    odd = parse_generation(processor, "</s><s>drop<loc_1><loc_2><loc_3><loc_4><loc_5></s>", "<OD>", (100, 50))
    assert odd["malformed"] and "5 location token" in odd["reason"]
    big = parse_generation(processor, "</s><s>drop<loc_1000><loc_2><loc_3><loc_4></s>", "<OD>", (100, 50))
    assert big["malformed"]
    empty = parse_generation(processor, "</s><s></s>", "<OD>", (100, 50))
    assert not empty["malformed"] and empty["boxes"] == []


def sample(task, groups, size=(100, 100)):
    return Sample(
        "x.jsonl:1",
        ROOT / "x.jpg",
        task,
        "",
        task,
        tuple(Group(label, tuple(tuple(b) for b in quantize(boxes, size))) for label, boxes in groups),
        size,
    )


def prediction(task, boxes, labels):
    return {"task": task, "text": "", "boxes": boxes, "labels": labels, "malformed": False, "reason": ""}


def test_od_map_equals_pycocotools_run_independently_with_per_class_ap():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = ["broken", "drop", "wrinkle"]
    samples = [
        sample("<OD>", [("drop", [[10, 10, 40, 40]]), ("wrinkle", [[50, 60, 95, 70]])]),
        sample("<OD>", [("drop", [[0, 0, 30, 30], [60, 60, 90, 90]])]),
    ]
    preds = [
        prediction("<OD>", [[11, 10, 41, 40], [0, 0, 20, 20], [50, 60, 95, 71]], ["drop", "drop", "wrinkle"]),
        prediction("<OD>", [[60, 62, 90, 90], [5, 5, 25, 25]], ["drop", "wrinkle"]),
    ]
    ours = od_metrics(list(zip(preds, samples, strict=True)), classes)
    # the same set written as COCO json by hand: truths are the dequantized targets (bin centres, truncated)
    images, annotations, results = [], [], []
    for i, (s, p) in enumerate(zip(samples, preds, strict=True), 1):
        images.append({"id": i, "width": 100, "height": 100})
        for label, (x1, y1, x2, y2) in s.boxes():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": classes.index(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for (x1, y1, x2, y2), label in zip(p["boxes"], p["labels"], strict=True):
            results.append(
                {
                    "image_id": i,
                    "category_id": classes.index(label) + 1,
                    "score": 1.0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
        }
        truth.createIndex()
        ev = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["map"] == pytest.approx(ev.stats[0]) and ours["map_50"] == pytest.approx(ev.stats[1])
    drop = ev.eval["precision"][:, :, 1, 0, -1]
    assert ours["ap_drop"] == pytest.approx(drop[drop > -1].mean())
    assert ours["ap_wrinkle"] < 1.0 < 1.0 + ours["ap_drop"] and np.isnan(ours["ap_broken"])  # no broken truth
    assert 0 < ours["map_50"] < 1


def test_grounding_recall_dense_captions_and_malformed_rate():
    g = sample(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        [("drop", [[10, 10, 40, 40], [60, 60, 90, 90]]), ("wrinkle", [[0, 80, 90, 95]])],
    )
    p = prediction(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        [[10, 10, 40, 40], [0, 80, 90, 95], [60, 60, 90, 90]],
        ["drop", "drop", "wrinkle"],
    )  # the second drop box carries the wrong phrase
    assert grounding_recall([(p, g)]) == pytest.approx(1 / 3)
    from trainers.metrics.captions import CaptionScorer

    d = sample(
        "<DENSE_REGION_CAPTION>", [("dark drop", [[10, 10, 40, 40]]), ("long wrinkle", [[0, 80, 90, 95]])]
    )
    q = prediction("<DENSE_REGION_CAPTION>", [[10, 10, 40, 40], [0, 0, 5, 5]], ["dark drop", "light drop"])
    dense = dense_metrics([(q, d)], CaptionScorer(("rouge_l",)))
    assert dense["dense_region_recall"] == 0.5 and dense["dense_rouge_l"] == pytest.approx(1.0)
    assert 0 < dense["dense_map_50"] < 1
    bad = {**p, "malformed": True}
    scores = score_all({0: bad, 1: p}, [g, g], [], None)
    assert scores["malformed_rate"] == 0.5 and np.isnan(scores["map_50"])  # no OD line in this set


def test_predict_images_and_draw():
    from trainers.tasks.prompted_generation.task import PromptedGenerationTask

    model, processor = build_tiny_florence2(seed=0)
    model.eval()
    task = PromptedGenerationTask()
    images = [Image.open(p) for p in sorted((FABRIC / "val" / "JPEGImages").glob("*.jpg"))[:2]]
    out = task.predict_images(model, processor, images, {"task": "<OD>", "max_new_tokens": "8"})
    assert len(out) == 2 and json.loads(json.dumps(out)) == out
    assert set(out[0]) >= {"task", "text", "boxes", "labels", "malformed", "image_size"}
    drawn = task.draw(images[0], {"boxes": [[2, 2, 30, 30]], "labels": ["drop"]})
    assert max(drawn.size) >= 256
    red = np.asarray(drawn)[..., 0] > 200
    assert red.any()
    swapped = task.draw(images[0], {"boxes": [[30, 30, 2, 2]], "labels": ["drop"]})  # a generated x2 < x1
    assert np.array_equal(np.asarray(swapped), np.asarray(drawn))
    with pytest.raises(Exception, match="caption"):
        task.predict_images(model, processor, images, {"task": "<CAPTION_TO_PHRASE_GROUNDING>"})
