"""ViT image classification: data layouts, bad input, metrics, the shipped tiny set, the loader, and tiny ViT
runs (full and LoRA) with a plain transformers Trainer evaluated through the generic evaluator."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from trainers.data_policy import DataError, data_report
from trainers.errors import RecipeError
from trainers.models.errors import ModelNotAvailableError
from trainers.models.vit import (
    TinyVitSpec,
    build_tiny_processor,
    build_tiny_vit,
    load_vit_classification,
    tiny_vit_config,
)
from trainers.tasks.classification.config import ClassificationData
from trainers.tasks.classification.data import (
    ClassificationCollator,
    ImageClassificationDataset,
    discover_classes,
    label_maps,
)
from trainers.tasks.classification.metrics import scores_from_confusion
from trainers.tasks.classification.task import ClassificationTask
from trainers.tasks.classification.tiny_classes import CLASSES, generate

TINY = ROOT / "data" / "tiny_classes"
PROCESSOR = build_tiny_processor(TinyVitSpec())
CHANCE = 1 / len(CLASSES)


def dataset(source, key="data.train", **kwargs) -> ImageClassificationDataset:
    classes = kwargs.pop("classes", list(CLASSES))
    return ImageClassificationDataset(source, key, classes, PROCESSOR, **kwargs)


def png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def one_paragraph(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and error.value.exit_code == 2
    return message


# -------------------------------------------------------------------------------------------- layouts


def test_image_folder_gives_sorted_classes_and_items_for_the_model():
    data = ClassificationData(train=str(TINY / "train"), val=str(TINY / "val"))
    assert discover_classes(data) == ["circle", "cross", "square", "triangle"]
    train = dataset(TINY / "train")
    assert len(train) == 4 * 48 and np.bincount(train.targets).tolist() == [48] * 4
    item = train[0]
    assert item["pixel_values"].shape == (3, 32, 32) and item["labels"] == 0
    batch = ClassificationCollator()([train[0], train[100]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].tolist() == [0, 2]
    assert label_maps(train.classes)["id2label"][3] == "triangle"


def test_csv_and_jsonl_lists_read_the_same_samples_as_the_folder(tmp_path):
    folder = dataset(TINY / "val", "data.val")
    rows = [(str(s.path.relative_to(TINY / "val")), s.label) for s in folder.samples]
    with (tmp_path / "val.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    (tmp_path / "val.jsonl").write_text(
        "".join(json.dumps({"image": i, "label": label}) + "\n" for i, label in rows)
    )
    for name in ("val.csv", "val.jsonl"):
        listed = dataset(tmp_path / name, "data.val", images=TINY / "val")
        assert listed.targets == folder.targets
        assert torch.equal(listed[5]["pixel_values"], folder[5]["pixel_values"])
    # declared labels fix the ids; the list's own labels are checked against them
    data = ClassificationData(
        train=str(tmp_path / "val.csv"),
        val="-",
        images=str(TINY / "val"),
        labels=("triangle", "square", "cross", "circle"),
    )
    assert discover_classes(data)[0] == "triangle"


def test_a_sample_limit_keeps_every_class():
    limited = dataset(TINY / "train", limit=6)
    assert limited.targets == [0, 1, 2, 3, 0, 1]


# ------------------------------------------------------------------------------------------ bad input


def test_a_class_folder_without_images_stops_naming_it_and_the_key(tmp_path):
    png(tmp_path / "train" / "circle" / "0.png")
    (tmp_path / "train" / "square").mkdir()
    (tmp_path / "train" / "square" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as error:
        dataset(tmp_path / "train")
    message = one_paragraph(error)
    assert message.startswith(f"{tmp_path / 'train' / 'square'}: class folder 'square'")
    assert "data.train" in message and "holds no images" in message


def test_a_listed_label_that_is_not_a_class_stops_at_its_line(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "val.csv").write_text("image,label\na.png,circle\na.png,hexagon\n")
    with pytest.raises(DataError) as error:
        dataset(tmp_path / "val.csv", "data.val")
    message = one_paragraph(error)
    assert message.startswith(
        f"{tmp_path / 'val.csv'}:3: label 'hexagon' in data.val is not among the classes"
    )
    assert "data.labels" in message


def test_num_labels_that_disagrees_with_the_data_is_a_recipe_error():
    data = ClassificationData(train=str(TINY / "train"), val=str(TINY / "val"), num_labels=5)
    with pytest.raises(RecipeError) as error:
        ClassificationTask().model_kwargs(SimpleNamespace(data=data))
    message = one_paragraph(error)
    assert message.startswith("data.num_labels=5, but the train split") and "has 4 classes" in message
    assert "Set data.num_labels=4" in message


def test_an_unreadable_image_stops_or_is_skipped_and_counted(tmp_path):
    png(tmp_path / "train" / "circle" / "0.png")
    png(tmp_path / "train" / "circle" / "1.png")
    broken = tmp_path / "train" / "cross" / "0.png"
    png(tmp_path / "train" / "cross" / "1.png")
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    classes = ["circle", "cross"]
    failing = dataset(tmp_path / "train", classes=classes)  # "fail" checks files exist, decodes lazily
    with pytest.raises(DataError) as error:
        failing[failing.samples.index(next(s for s in failing.samples if s.path == broken))]
    message = one_paragraph(error)
    assert message.startswith(f"{broken}: cannot read the image") and "data.train" in message
    assert 'on_bad_sample="skip"' in message
    skipping = dataset(tmp_path / "train", classes=classes, on_bad_sample="skip")
    assert len(skipping) == 3 and broken not in [s.path for s in skipping.samples]
    report = data_report(("train", skipping))["train"]
    assert report["skipped"] == 1 and report["by_reason"] == {"corrupt_image": 1}


def test_a_missing_listed_image_obeys_on_bad_sample(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "train.jsonl").write_text(
        '{"image": "a.png", "label": "circle"}\n{"image": "gone.png", "label": "circle"}\n'
    )
    with pytest.raises(DataError) as error:
        dataset(tmp_path / "train.jsonl")
    assert one_paragraph(error).startswith(f"{tmp_path / 'train.jsonl'}:2: image file")
    assert len(dataset(tmp_path / "train.jsonl", on_bad_sample="skip")) == 1


# --------------------------------------------------------------------------------------------- metrics


def test_accuracy_and_per_class_accuracy_from_the_confusion_matrix(tmp_path):
    task = ClassificationTask()
    val = dataset(TINY / "val", "data.val", limit=8)  # targets 0,1,2,3,0,1,2,3
    predictions = {0: 0, 1: 1, 2: 2, 3: 0, 4: 0, 5: 2, 6: 2, 7: 3}
    scores = task.score(predictions, val)
    assert scores == {
        "accuracy": 6 / 8,
        "mean_class_accuracy": (1 + 0.5 + 1 + 0.5) / 4,
        "class_accuracy/circle": 1.0,
        "class_accuracy/cross": 0.5,
        "class_accuracy/square": 1.0,
        "class_accuracy/triangle": 0.5,
    }
    cm = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 0, 0]])  # class 2 absent: no accuracy, not a zero
    assert scores_from_confusion(cm, ["a", "b", "c"]) == {
        "accuracy": 0.75,
        "mean_class_accuracy": 0.75,
        "class_accuracy/a": 1.0,
        "class_accuracy/b": 0.5,
    }
    task.save_artifacts(predictions, val, tmp_path / "val")
    image = tmp_path / "val" / "confusion_matrix.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(image).size[0] >= 200
    saved = json.loads((tmp_path / "val" / "confusion_matrix.json").read_text())
    assert saved["matrix"][3] == [1, 0, 0, 1] and saved["classes"] == list(CLASSES)
    assert task.examples(predictions, val, n=1)[0]["prediction"] == "circle"


# ------------------------------------------------------------------------------------- the shipped set


def test_the_shipped_tiny_set_is_what_the_generator_writes(tmp_path):
    generate(tmp_path, {"train": 48, "val": 16, "test": 16})
    shipped = sorted(p.relative_to(TINY) for p in TINY.rglob("*.png"))
    assert shipped == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert len(shipped) == 4 * (48 + 16 + 16)
    assert sum((TINY / p).stat().st_size for p in shipped) < 500_000
    for rel in shipped:
        assert np.array_equal(np.asarray(Image.open(TINY / rel)), np.asarray(Image.open(tmp_path / rel))), rel


# ------------------------------------------------------------------------------------------ the loader


def test_loader_reads_a_local_directory_with_the_datas_labels(tmp_path):
    labels = label_maps(list(CLASSES))
    model, processor = build_tiny_vit(TinyVitSpec(), seed=0, **labels)
    model.save_pretrained(tmp_path / "vit")
    processor.save_pretrained(tmp_path / "vit")
    loaded, loaded_processor = load_vit_classification(str(tmp_path / "vit"), **labels)
    assert type(loaded_processor).__name__ == "ViTImageProcessorPil"
    assert loaded.config.id2label == labels["id2label"]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(
            model.eval()(pixel_values=pixels).logits, loaded.eval()(pixel_values=pixels).logits
        )
    relabelled, _ = load_vit_classification(str(tmp_path / "vit"), **label_maps(["a", "b"]))  # a new head
    assert relabelled.classifier.out_features == 2


def test_loader_says_how_to_provide_a_missing_model(tmp_path, monkeypatch):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_vit_classification(str(tmp_path / "nothing"), num_labels=2)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text(tiny_vit_config(TinyVitSpec()).to_json_string())
    with pytest.raises(ModelNotAvailableError, match="lacks model.safetensors.*preprocessor_config.json"):
        load_vit_classification(str(tmp_path / "partial"), num_labels=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailableError) as error:
        load_vit_classification("google/vit-base-patch16-224-in21k", num_labels=2)
    assert "hf download google/vit-base-patch16-224-in21k" in str(error.value)


# ---------------------------------------------------------------------------------- tiny runs (slow)


class EvalEachEpoch:
    """Times each epoch and evaluates after it through the generic evaluator (what the core will do)."""

    def __new__(cls, evaluator):
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            def __init__(self) -> None:
                self.trainer = None
                self.history: list[dict[str, float]] = []
                self.seconds: list[float] = []

            def on_epoch_begin(self, args, state, control, **kwargs):
                self.started = time.perf_counter()

            def on_epoch_end(self, args, state, control, **kwargs):
                self.seconds.append(time.perf_counter() - self.started)
                self.history.append(evaluator(self.trainer))

        return _Callback()


LORA = dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])


def train_tiny(out: Path, lora: bool, seed: int = 0, epochs: int = 10) -> SimpleNamespace:
    """A tiny ViT trained on data/tiny_classes with a plain Trainer; LoRA on a random-init base or full."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from trainers.evaluation import ShardedEvaluator
    from trainers.reporting.memory import PeakMemoryCallback

    task = ClassificationTask()
    recipe = SimpleNamespace(
        data=ClassificationData(train=str(TINY / "train"), val=str(TINY / "val"), test=str(TINY / "test"))
    )
    labels = task.model_kwargs(recipe)
    model, processor = build_tiny_vit(TinyVitSpec(), seed=seed, **labels)
    model.save_pretrained(out / "base")
    processor.save_pretrained(out / "base")
    if lora:
        model = get_peft_model(model, LoraConfig(**LORA))
    data = task.build(recipe, processor)
    evaluator = ShardedEvaluator(task, data.val, data.eval_collator, batch_size=64)
    each_epoch, memory = EvalEachEpoch(evaluator), PeakMemoryCallback(out)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        learning_rate=5e-3 if lora else 1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        seed=seed,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=12,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        data_collator=data.collator,
        callbacks=[each_epoch, memory],
    )
    each_epoch.trainer = trainer
    before = evaluator(trainer)
    trainer.train()
    model.save_pretrained(out / "best")
    test = ShardedEvaluator(
        task, data.test, data.eval_collator, batch_size=64, prefix="test_", artifacts_dir=out / "test"
    )
    return SimpleNamespace(
        model=model,
        data=data,
        trainer=trainer,
        before=before,
        history=each_epoch.history,
        seconds=each_epoch.seconds,
        peak=memory.peak,
        test=test(trainer),
        out=out,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_vit")
    return {"full": train_tiny(root / "full", lora=False), "lora": train_tiny(root / "lora", lora=True)}


@pytest.mark.slow
def test_full_fine_tune_of_the_tiny_vit_rises_well_above_chance(runs):
    run = runs["full"]
    # measured here, seeds 0 / 1 / 2, 10 epochs: val accuracy 0.25 / 0.08 / 0.42 untrained -> 0.78 / 0.81 / 0.77,
    # test 0.78 / 0.83 / 0.80 (chance 0.25)
    assert run.history[-1]["accuracy"] >= 0.6 > CHANCE
    assert run.history[-1]["accuracy"] - run.before["accuracy"] >= 0.3
    assert run.test["test_accuracy"] >= 0.6
    assert (run.out / "test" / "confusion_matrix.png").is_file()
    assert len(run.seconds) == 10 and run.peak.device == "cpu" and run.peak.bytes > 0
    assert (run.out / "peak_memory.json").is_file()


@pytest.mark.slow
def test_lora_run_reloads_with_stock_peft_and_counts_what_the_architecture_says(runs):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    from trainers.analysis.lora_vs_full import lora_param_count

    run = runs["lora"]
    # measured here, seeds 0 / 1 / 2, 10 epochs at lr 5e-3: val accuracy 0.89 / 0.84 / 0.86, test 0.89 / 0.83 / 0.89
    assert run.history[-1]["accuracy"] >= 0.6 > CHANCE
    assert run.history[-1]["accuracy"] - run.before["accuracy"] >= 0.3
    with torch.device("meta"):
        architecture = ViTForImageClassification(tiny_vit_config(TinyVitSpec(), **label_maps(list(CLASSES))))
    computed = lora_param_count(architecture, LORA["target_modules"], LORA["r"], LORA["modules_to_save"])
    trainable, _ = run.model.get_nb_trainable_parameters()
    assert trainable == computed == 4 * 2 * 16 * (64 + 64) + (64 * 4 + 4)

    reloaded = PeftModel.from_pretrained(
        ViTForImageClassification.from_pretrained(run.out / "base"), run.out / "best"
    )
    pixels = ClassificationCollator()([run.data.val[i] for i in range(16)])["pixel_values"]
    with torch.no_grad():
        expected = run.model.eval()(pixel_values=pixels).logits
        assert torch.equal(reloaded.eval()(pixel_values=pixels).logits, expected)
        base = ViTForImageClassification.from_pretrained(run.out / "base").eval()(pixel_values=pixels).logits
    assert not torch.allclose(base, expected)  # the adapter is what makes them equal


@pytest.mark.slow
def test_lora_vs_full_report_of_the_tiny_runs(runs, tmp_path):
    from trainers.analysis.lora_vs_full import RunNumbers, checkpoint_bytes, write_report

    rows = []
    for kind, run in runs.items():
        size, saved = checkpoint_bytes(run.out / "best")
        assert saved == ("adapter" if kind == "lora" else "full")
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        accuracy = [h["accuracy"] for h in run.history]
        rows.append(
            RunNumbers(
                kind,
                kind,
                trainable,
                sum(p.numel() for p in run.model.parameters()),
                size,
                "accuracy",
                accuracy[-1],
                max(accuracy),
                sum(run.seconds) / len(run.seconds),
                run.peak.bytes,
                f"{run.peak.device}: {run.peak.measure}",
                str(run.out),
            )
        )
    md, js = write_report(rows, tmp_path)
    report = json.loads(js.read_text())["runs"]
    full, lora = (next(r for r in report if r["kind"] == k) for k in ("full", "lora"))
    assert lora["checkpoint_bytes"] < full["checkpoint_bytes"] / 3
    assert lora["trainable_ratio"] < full["trainable_ratio"] == 1.0
    assert "| accuracy best |" in md.read_text()


def test_the_majority_class_baseline_is_scored_like_the_model():
    """The most frequent training class (ties: the first class) answered for every val image, through the same
    confusion matrix: accuracy is its share of the val set, mean class accuracy one over the classes present."""
    from trainers.tasks.classification.baseline import majority_class_baseline

    classes = ["cat", "dog", "bird"]
    baseline = majority_class_baseline([1, 1, 0, 2, 1, 0], [0, 1, 1, 2], classes)
    assert (baseline.label, baseline.train_count, baseline.train_size) == ("dog", 3, 6)
    assert baseline.scores == {"accuracy": 0.5, "mean_class_accuracy": pytest.approx(1 / 3)}
    assert majority_class_baseline([2, 0, 2, 0], [0], classes).label == "cat"
    assert "majority training class 'dog' (3 of 6)" in baseline.render()
