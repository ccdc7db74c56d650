"""Loader workers (`training.num_workers`, default "auto"): how many per rank, and the seeded augmentation
bit-identical to `num_workers=0` (the same pixels for the same seed, epoch and index) with persistent workers,
on 1 and 2 ranks and after a resume. Data errors raised in a worker: tests/test_bad_inputs.py
(`image-corrupt-in-worker`)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from conftest import ROOT
from trainers.callbacks.dataset_epoch import DatasetEpoch
from trainers.data.epoch import SharedEpoch
from trainers.data.loader import AUTO_MAX_WORKERS, loader_settings, resolve_num_workers, stop_workers
from trainers.errors import RecipeError
from trainers.models.vit import TinyVitSpec, build_tiny_processor
from trainers.recipe import load_recipe
from trainers.tasks.classification.task import ClassificationTask

RECIPE = str(ROOT / "recipes" / "vit_lora.py")
N = 12  # items per epoch in these checks


def test_auto_gives_each_gpu_rank_a_few_workers_and_keeps_a_core_for_the_step():
    assert resolve_num_workers("auto", cuda=True, cpus=2, local_world=1) == 1
    assert resolve_num_workers("auto", cuda=True, cpus=2, local_world=2) == 0
    assert resolve_num_workers("auto", cuda=True, cpus=16, local_world=1) == AUTO_MAX_WORKERS == 4
    assert resolve_num_workers("auto", cuda=True, cpus=16, local_world=8) == 1
    assert resolve_num_workers("auto", cuda=False, cpus=16, local_world=1) == 0  # the step needs the cores
    assert resolve_num_workers(3, cuda=False, cpus=1, local_world=8) == 3  # a number is taken as it is
    assert loader_settings("auto", cuda=True, cpus=16, local_world=1) == loader_settings(4, cuda=True)
    gpu = loader_settings("auto", cuda=True, cpus=16, local_world=1)
    assert (gpu.num_workers, gpu.persistent_workers, gpu.pin_memory) == (4, True, True)
    cpu = loader_settings(0, cuda=False)
    assert (cpu.num_workers, cpu.persistent_workers, cpu.pin_memory) == (0, False, False)


def test_the_recipe_default_is_auto_and_bad_values_name_the_key():
    assert load_recipe(RECIPE, [], demo=True).training.num_workers == "auto"
    assert load_recipe(RECIPE, ["training.num_workers=2"], demo=True).training.num_workers == 2
    with pytest.raises(RecipeError, match="training.num_workers"):
        load_recipe(RECIPE, ["training.num_workers=-1"], demo=True)
    with pytest.raises(RecipeError, match="training.num_workers"):
        load_recipe(RECIPE, ["training.num_workers=many"], demo=True)


def test_a_shared_epoch_is_shared_only_with_starting_workers():
    shared = SharedEpoch(3)
    copied = copy.deepcopy(shared)  # not a worker start: a plain copy of the value
    restored = pickle.loads(pickle.dumps(shared))
    shared.value = 5
    assert (copied.value, restored.value) == (3, 3)


@pytest.fixture(scope="module")
def train_set():
    """The ViT demo's training split, augmented (crop, flip) as the demo recipe declares."""
    recipe = load_recipe(RECIPE, [], demo=True)
    assert recipe.data.augment.active
    return ClassificationTask().build(recipe, build_tiny_processor(TinyVitSpec())).train


def _collate(items: list[dict]) -> dict:
    return {"pixel_values": torch.stack([i["pixel_values"] for i in items])}


def _epochs(
    dataset, indices: list[int], epochs: list[int], workers: int
) -> dict[tuple[int, int], torch.Tensor]:
    """(epoch, index) -> pixels, one loader over `indices` kept across `epochs` (persistent workers when any),
    the epoch announced the way the Trainer does it: the callback, then the epoch's iterator."""
    settings = loader_settings(workers, cuda=False)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=4,
        collate_fn=_collate,
        num_workers=settings.num_workers,
        persistent_workers=settings.persistent_workers,
    )
    seen = {}
    for epoch in epochs:
        DatasetEpoch(dataset).on_epoch_begin(None, type("State", (), {"epoch": float(epoch)})(), None)
        batches = [b["pixel_values"] for b in loader]
        for index, pixels in zip(indices, torch.cat(batches), strict=True):
            seen[(epoch, index)] = pixels
    return seen


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_persistent_workers_give_the_pixels_of_num_workers_0_on_one_and_two_ranks_and_after_a_resume(
    train_set,
):
    indices = list(range(N))
    reference = _epochs(train_set, indices, [0, 1, 2], workers=0)
    # the epochs really differ (else the check below could not see a worker stuck at epoch 0)
    assert sum(not torch.equal(reference[(0, i)], reference[(1, i)]) for i in indices) >= N // 2
    one_rank = _epochs(train_set, indices, [0, 1, 2], workers=2)
    assert _same(one_rank, reference)
    two_ranks = {}  # each rank its strided shard, 2 persistent workers each, the same epochs
    for rank in range(2):
        two_ranks.update(_epochs(train_set, indices[rank::2], [0, 1, 2], workers=2))
    assert _same(two_ranks, reference)
    resumed = _epochs(train_set, indices, [1, 2], workers=2)  # a fresh loader starting at epoch 1
    assert _same(resumed, {k: v for k, v in reference.items() if k[0] >= 1})


def test_stop_workers_ends_a_loaders_persistent_workers_and_a_later_epoch_starts_new_ones(train_set):
    """What a run does at its end (`RecipeTrainer.release_loader_workers`): left to the collection of the
    Trainer's reference cycle, each worker cost DataLoader's 5 s join timeout."""
    loader = DataLoader(
        Subset(train_set, range(4)), batch_size=4, collate_fn=_collate, num_workers=1, persistent_workers=True
    )
    first = next(iter(loader))["pixel_values"]
    workers = list(loader._iterator._workers)
    assert all(w.is_alive() for w in workers)
    wrapped = type(
        "Prepared", (), {"base_dataloader": loader}
    )()  # accelerate's loaders hold the real one inside
    assert stop_workers([None, wrapped]) == 1
    assert loader._iterator is None and not any(w.is_alive() for w in workers)
    assert torch.equal(next(iter(loader))["pixel_values"], first)
    assert stop_workers([loader]) == 1 and stop_workers([loader]) == 0
