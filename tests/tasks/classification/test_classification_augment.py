"""`data.augment` on the classification task: training split only, seeded by (seed, epoch, index), validated
at recipe load. (2 ranks equal 1 with it on: the ViT demo recipe augments, tests/distributed/test_lora_distributed.py.)"""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from trainers.callbacks.dataset_epoch import DatasetEpoch
from trainers.errors import RecipeError
from trainers.models.vit import TinyVitSpec, build_tiny_processor
from trainers.recipe import load_recipe
from trainers.tasks.classification.task import ClassificationTask

RECIPE = str(ROOT / "recipes" / "vit_lora.py")


@pytest.fixture(scope="module")
def data():
    recipe = load_recipe(RECIPE, [], demo=True)
    assert recipe.data.augment.hflip == 0.5 and recipe.data.augment.random_resized_crop.scale == (0.85, 1.0)
    return ClassificationTask().build(recipe, build_tiny_processor(TinyVitSpec()))


def test_training_items_are_augmented_by_epoch_and_index_and_validation_items_never(data):
    train, val = data.train, data.val
    first = [train[i]["pixel_values"] for i in range(8)]
    assert all(
        torch.equal(a, train[i]["pixel_values"]) for i, a in enumerate(first)
    )  # same epoch, same pixels
    DatasetEpoch(train).on_epoch_begin(None, type("State", (), {"epoch": 1.0})(), None)
    assert train.epoch == 1
    moved = [not torch.equal(a, train[i]["pixel_values"]) for i, a in enumerate(first)]
    assert sum(moved) >= 6, moved  # a crop of 85-100% of the area and a coin-flip mirror: nearly always new
    train.set_epoch(0)
    assert all(
        torch.equal(a, train[i]["pixel_values"]) for i, a in enumerate(first)
    )  # epoch 0 again: as before
    # a run resumed mid-epoch starts with state.epoch = 0.5 (half of epoch 0 done): epoch 0's pixels again
    train.set_epoch(1)
    DatasetEpoch(train).on_epoch_begin(None, type("State", (), {"epoch": 0.5})(), None)
    assert all(torch.equal(a, train[i]["pixel_values"]) for i, a in enumerate(first))
    DatasetEpoch(train).on_epoch_begin(
        None, type("State", (), {"epoch": None})(), None
    )  # a fresh TrainerState
    assert train.epoch == 0
    assert val.augment is None and torch.equal(val[0]["pixel_values"], val[0]["pixel_values"])


def test_the_training_seed_changes_the_augmentation(data):
    recipe = load_recipe(RECIPE, ["training.seed=7"], demo=True)
    other = ClassificationTask().build(recipe, build_tiny_processor(TinyVitSpec())).train
    assert not all(torch.equal(data.train[i]["pixel_values"], other[i]["pixel_values"]) for i in range(8))


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.augment.hflip=2", "data.augment.hflip"),
        ("data.augment.random_resized_crop.scale=0.9,0.5", "data.augment.random_resized_crop.scale"),
    ],
)
def test_an_impossible_augmentation_setting_is_a_recipe_error_naming_the_key(override, key):
    with pytest.raises(RecipeError) as error:
        load_recipe(RECIPE, [override], demo=True)
    assert key in str(error.value) and error.value.exit_code == 2
