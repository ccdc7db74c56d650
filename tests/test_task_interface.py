"""The task interface and the model-family entry: declared metrics, hooks, towers, served tasks, meta counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import ROOT
from trainers.errors import RecipeError
from trainers.models.family import FamilyEntry
from trainers.models.vit import KNOWN_IDS, VIT_BASE_IN21K, VIT_CLASSIFICATION, TinyVitSpec, build_tiny_vit
from trainers.tasks.classification import TASK, ClassificationData
from trainers.tasks.interface import Task, TaskData, TaskLossMixin, check_metric_names, load_task, produces

TINY_CLASSES = ROOT / "data" / "tiny_classes"
VIT_B16_BACKBONE = 85_798_656  # ViTConfig() defaults = ViT-B/16 at 224 px, without pooler


class Regression(nn.Module):
    """A model whose own loss is MSE; the task below replaces it with L1."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, labels=None):
        out = self.linear(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class L1Task(Task[float]):
    name = "regression"
    data_config = dict
    eval_config = dict
    metrics = ("mae",)
    metric_prefixes = ("mae/",)
    default_best_metric = "mae"

    def compute_loss(self, model, inputs):
        return nn.functional.l1_loss(model.linear(inputs["x"]).squeeze(-1), inputs["labels"])


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


# ------------------------------------------------------------------------------------------- the task


def test_defaults_of_a_task_are_the_model_loss_and_no_artifacts():
    task = Task()
    assert task.compute_loss(nn.Linear(1, 1), {}) is None
    assert task.examples({3: "a", 5: "b"}, None, n=1) == [{"index": 3, "prediction": "a"}]
    assert task.best_metric() == ("loss", False)
    with pytest.raises(NotImplementedError):
        task.predict(nn.Linear(1, 1), {})


def test_metric_names_are_checked_against_what_the_task_produces():
    task = load_task(TASK)
    ok = {"early_stopping.metric": ("accuracy", "eval_mean_class_accuracy", "class_accuracy/circle", "loss")}
    check_metric_names(task, None, ok)
    with pytest.raises(RecipeError) as error:
        check_metric_names(task, None, {"early_stopping.metric": "acuracy"})
    message = str(error.value)
    assert message.startswith(
        "early_stopping.metric: 'acuracy' is not a metric the classification task produces"
    )
    assert "Did you mean 'accuracy'?" in message and "class_accuracy/<label>" in message
    assert "\n" not in message and error.value.exit_code == 2
    # a prefix alone names no metric; one part of a mean(...) is enough to fail
    assert not produces(task, "class_accuracy/")
    with pytest.raises(RecipeError, match="'rouge_l' is not a metric"):
        check_metric_names(task, None, {"early_stopping.metric": ("accuracy", "rouge_l")})


def test_classification_task_declares_its_configs_metrics_and_best_metric():
    task = load_task(TASK)
    assert task.name == ClassificationData.task == "classification"
    assert task.data_config is ClassificationData
    assert task.metric_names() == ("accuracy", "mean_class_accuracy")
    assert task.best_metric() == ("accuracy", True)
    recipe = SimpleNamespace(
        data=ClassificationData(train=str(TINY_CLASSES / "train"), val=str(TINY_CLASSES / "val"))
    )
    kwargs = task.model_kwargs(recipe)
    assert kwargs["id2label"] == {0: "circle", 1: "cross", 2: "square", 3: "triangle"}
    assert kwargs["num_labels"] == 4 and kwargs["label2id"]["triangle"] == 3


def test_load_task_refuses_what_is_not_a_task():
    with pytest.raises(TypeError, match="not a trainers.tasks.interface.Task"):
        load_task("trainers.tasks.classification.data:ClassificationCollator")


def test_task_data_defaults_and_splits():
    data = TaskData(train=[1], val=[2], collator=len, extra_val={"coco": [3]}, test=[4])
    assert data.eval_collator is len
    assert [name for name, _ in data.splits()] == ["train", "val", "val_coco", "test"]


def test_compute_loss_hook_replaces_the_model_loss_in_training_and_evaluation(tmp_path):
    from transformers import Trainer, TrainingArguments

    class TaskTrainer(TaskLossMixin, Trainer):
        pass

    model, data = Regression(), Rows()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=8,
        use_cpu=True,
        report_to=[],
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = TaskTrainer(model=model, args=args, eval_dataset=data)
    trainer.task = L1Task()
    batch = {"x": data.x, "labels": data.y}
    with torch.no_grad():
        l1 = nn.functional.l1_loss(model.linear(data.x).squeeze(-1), data.y).item()
        mse = model(**batch)["loss"].item()
    assert abs(l1 - mse) > 1e-3  # the two losses differ, so the check below can fail
    assert trainer.compute_loss(model, batch).item() == pytest.approx(l1)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(l1, rel=1e-6)
    trainer.task = None
    assert trainer.evaluate()["eval_loss"] == pytest.approx(mse, rel=1e-6)


# --------------------------------------------------------------------------------------- the family

NO_FUNCTIONS = (None,) * 4  # loader, tiny builder, model and processor class: unused by the checks below


def test_vit_family_entry_resolves_its_classes_and_serves_classification_only():
    assert VIT_CLASSIFICATION.model_class().__name__ == "ViTForImageClassification"
    assert VIT_CLASSIFICATION.processor_class().__name__ == "ViTImageProcessorPil"
    assert VIT_CLASSIFICATION.serves("classification") and not VIT_CLASSIFICATION.serves("captioning")
    VIT_CLASSIFICATION.check_serves("classification")
    with pytest.raises(RecipeError) as error:
        VIT_CLASSIFICATION.check_serves("captioning")
    assert str(error.value).startswith("model.family: family 'vit' serves the classification task")
    with pytest.raises(ValueError, match="towers"):
        FamilyEntry("x", ("t",), *NO_FUNCTIONS, towers={"neck": ("n.",)})


def test_towers_cover_every_parameter_of_the_tiny_vit_exactly_once():
    model, _ = VIT_CLASSIFICATION.build_tiny()(TinyVitSpec(), seed=0, num_labels=4)
    counts = VIT_CLASSIFICATION.tower_counts(model)
    assert counts["head"] == 64 * 4 + 4
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert VIT_CLASSIFICATION.tower_of("base_model.model.classifier.modules_to_save.default.weight") == "head"
    import re

    vision = re.compile(VIT_CLASSIFICATION.tower_regex("vision"))
    assert {vision.search(n) is not None for n, _ in model.named_parameters()} == {True, False}
    with pytest.raises(RecipeError, match="no 'text' tower"):
        VIT_CLASSIFICATION.tower_regex("text")
    only_head = FamilyEntry("x", ("t",), *NO_FUNCTIONS, towers={"head": ("classifier.",)})
    with pytest.raises(ValueError, match="belong to no tower"):
        only_head.tower_counts(model)


def test_meta_architecture_of_vit_base_counts_without_weights():
    model = VIT_CLASSIFICATION.meta_model(VIT_BASE_IN21K, num_labels=4)
    assert all(p.device.type == "meta" for p in model.parameters())
    counts = VIT_CLASSIFICATION.tower_counts(model)
    assert counts == {"vision": VIT_B16_BACKBONE, "head": 768 * 4 + 4}
    assert model.config.num_labels == 4
    assert VIT_BASE_IN21K in KNOWN_IDS
    assert VIT_CLASSIFICATION.meta_model("someone/unknown-vit", num_labels=4) is None


def test_tiny_builder_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, _ = build_tiny_vit(TinyVitSpec(), seed=3, num_labels=4)
    b, _ = build_tiny_vit(TinyVitSpec(), seed=3, num_labels=4)
    c, _ = build_tiny_vit(TinyVitSpec(), seed=4, num_labels=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.vit.layers[0].attention.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
