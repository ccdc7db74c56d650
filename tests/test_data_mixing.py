"""A mixed training split (`data.train=[MixSource(...), ...]`): the draw of `MixedDataset` (weights respected
over an epoch, seeded, the same per epoch in any process), the recipe side, and `build_task_data` building
the mix through a real task's own `build` (captioning on the shipped shapes, tiny BLIP processor)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

from trainers.data.mix_config import MixSource, as_mix
from trainers.data.mixing import MixedDataset, build_task_data
from trainers.errors import RecipeError


def _mix(weights=(3.0, 1.0), sizes=(100, 50), seed=7) -> MixedDataset:
    sources = [[(k, i) for i in range(n)] for k, n in enumerate(sizes)]
    return MixedDataset(sources, ["big", "small"], None if weights is None else list(weights), seed=seed)


def test_weights_are_the_sampling_probabilities_over_an_epoch():
    mix = _mix()
    assert len(mix) == 150
    counts = mix.drawn(0)
    # 150 draws at p = 0.75: binomial standard deviation 5.3; 4 sigma
    assert abs(counts["big"] - 112.5) <= 4 * np.sqrt(150 * 0.75 * 0.25), counts
    assert counts["big"] + counts["small"] == 150
    over_epochs = sum(mix.drawn(e)["big"] for e in range(40)) / (40 * 150)
    assert abs(over_epochs - 0.75) < 0.02, over_epochs
    items = [mix[i] for i in range(len(mix))]  # what the Trainer reads: (source, item) of each position
    assert sum(1 for k, _ in items if k == 0) == counts["big"]


def test_a_source_is_walked_in_permutations_before_an_item_repeats():
    mix = _mix(weights=(1.0, 3.0))  # the 50-item source fills ~112 positions: every item twice or three times
    sources, items = mix.plan(0)
    seen = np.bincount(items[sources == 1], minlength=50)
    assert seen.min() >= (sources == 1).sum() // 50 and seen.max() <= -(-(sources == 1).sum() // 50)
    big = items[sources == 0]
    assert len(set(big.tolist())) == len(big)  # fewer draws than items: no repeats


def test_the_draw_is_seeded_and_deterministic_per_epoch():
    a, b = _mix(), _mix()
    for epoch in (0, 1, 5):
        assert all(np.array_equal(x, y) for x, y in zip(a.plan(epoch), b.plan(epoch), strict=True))
    assert not np.array_equal(a.plan(0)[0], a.plan(1)[0])  # a new draw each epoch
    assert not np.array_equal(a.plan(0)[0], _mix(seed=8).plan(0)[0])  # and per seed
    a.set_epoch(3)
    first = [a[i] for i in range(10)]
    a.set_epoch(4)
    a.set_epoch(3)  # asked again (a resume re-enters the epoch): the same items
    assert [a[i] for i in range(10)] == first


def test_a_loader_worker_copy_reads_the_epoch_the_training_process_set():
    mix = _mix()
    mix.set_epoch(2)
    worker = pickle.loads(pickle.dumps(mix))  # a plain copy keeps the value it had
    assert [worker[i] for i in range(20)] == [mix[i] for i in range(20)]
    assert copy.deepcopy(mix).epoch == 2


def test_without_weights_the_sources_are_concatenated():
    mix = _mix(weights=None)
    assert [mix[i] for i in range(len(mix))] == [(0, i) for i in range(100)] + [(1, i) for i in range(50)]
    assert mix.report(2)["sources"]["small"] == {
        "size": 50,
        "probability": None,
        "drawn_per_epoch": [50, 50],
        "drawn_total": 100,
    }


def test_set_epoch_reaches_the_sources():
    class Source(list):
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

    one, two = Source(range(4)), Source(range(4))
    mix = MixedDataset([one, two], ["a", "b"], [1.0, 1.0])
    mix.set_epoch(5)
    assert one.epoch == two.epoch == 5 == mix.epoch


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "empty list"),
        ([MixSource("a", 1.0), MixSource("b")], "data.train[1] has none"),
        ([MixSource("a", 0.0), MixSource("b", 0.0)], "the weights sum to 0"),
        ([MixSource("a", -1.0), MixSource("b", 2.0)], "data.train[0].weight=-1.0"),
        ([MixSource("a", float("nan")), MixSource("b", 2.0)], "finite number"),
        ([MixSource("a", name="x"), MixSource("b", name="x")], "'x'"),
        ([MixSource(3)], "data.train[0].source is a int"),
    ],
)
def test_a_mix_that_cannot_be_sampled_is_a_recipe_error(entries, expected):
    with pytest.raises(RecipeError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        as_mix(entries)


def test_a_list_in_data_train_becomes_the_mix_and_the_first_source_is_train(tmp_path):
    from trainers.recipe import ClassificationData

    data = ClassificationData(train=["a_dir", MixSource(str(tmp_path), name="mine")], val="v")
    assert data.train == "a_dir"
    assert [(key, name) for key, name, _ in data.mix_entries()] == [
        ("data.train[0]", "source0"),
        ("data.train[1]", "mine"),
    ]
    assert data.mix_missing() == []  # tmp_path exists; source0 is `train`, checked as usual
    data.train = ["x", "y"]  # an assignment after construction is taken too
    assert data.mix_missing() == ["data.train[1].source 'y' (image folder or list file)"]  # read: normalised
    assert data.train == "x"


def test_each_source_is_built_by_the_task_itself_and_the_first_source_keeps_the_rest(tmp_path):
    import dataclasses
    import json

    from conftest import SHAPES, tiny_recipe
    from trainers.models.blip import TinyBlipSpec, build_tiny_processor
    from trainers.tasks.registry import get_task

    second = tmp_path / "second.json"
    captions = json.loads((SHAPES / "train.json").read_text())
    second.write_text(json.dumps(dict(list(captions.items())[-12:])))
    recipe = tiny_recipe(tmp_path / "run")
    single = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, train=str(second)))
    recipe.data.train = [MixSource(recipe.data.train, 3.0, name="shapes"), MixSource(str(second), 1.0)]
    processor = build_tiny_processor(TinyBlipSpec())
    task = get_task(recipe.data)
    mixed = build_task_data(task, recipe, processor)
    alone = get_task(single.data).build(single, processor)
    assert (
        isinstance(mixed.train, MixedDataset) and len(mixed.train) == 32 + 12
    )  # max_train_samples: per source
    assert mixed.train.names == ["shapes", "source1"] and mixed.train.weights == [3.0, 1.0]
    assert len(mixed.val) == 8
    sources, items = mixed.train.plan(0)
    position = int(np.flatnonzero(sources == 1)[0])
    got, want = mixed.train[position], alone.train[int(items[position])]
    assert got.keys() == want.keys() and all(
        np.array_equal(np.asarray(got[k]), np.asarray(want[k])) for k in got
    )  # the second source's item, as its own build gives it


def test_sources_with_different_label_sets_are_refused(tmp_path):
    class Task:
        def missing_data(self, recipe):
            return []

        def model_kwargs(self, recipe):
            return {"id2label": {0: "cat", 1: "dog"} if recipe.data.train == "a" else {0: "dog", 1: "cat"}}

        def build(self, recipe, processor):  # pragma: no cover - refused before
            raise AssertionError

    from conftest import tiny_recipe
    from trainers.recipe import ClassificationData

    recipe = tiny_recipe(tmp_path)
    recipe.data = ClassificationData(train=["a", "b"], val="v")
    with pytest.raises(
        RecipeError, match=r"data.train\[1\]: this source's labels differ.*dog, cat vs cat, dog"
    ):
        build_task_data(Task(), recipe, None)


def _mixed_recipe(out, second, **training):
    from conftest import SHAPES, tiny_recipe

    recipe = tiny_recipe(out, epochs=2, save_steps=2, save_total_limit=10, **training)
    recipe.data.max_train_samples = 16
    recipe.data.train = [MixSource(str(SHAPES / "train.json"), 1.0), MixSource(str(second), 3.0, name="few")]
    return recipe


@pytest.mark.timeout(600)
def test_a_resumed_mixed_run_equals_the_uninterrupted_one(tmp_path):
    """Resumed mid-epoch from a copy of the uninterrupted run's checkpoint, a run with a weighted mix ends
    with the same weights bit for bit, logs the same losses after the checkpoint and reports the same counts."""
    import json
    import shutil

    from safetensors.torch import load_file

    from conftest import SHAPES
    from trainers.run import complete_run, setup_run

    second = tmp_path / "few.json"
    second.write_text(json.dumps(dict(list(json.loads((SHAPES / "train.json").read_text()).items())[-8:])))
    first = setup_run(_mixed_recipe(tmp_path / "straight", second, resume="never"))
    straight = complete_run(first)
    steps = straight["global_steps"]
    assert straight["data_mix"]["sources"]["few"]["size"] == 8
    drawn = straight["data_mix"]["sources"]
    assert sum(s["drawn_per_epoch"][0] for s in drawn.values()) == 24 and drawn["few"]["drawn_per_epoch"] != [
        8,
        8,
    ]
    assert steps == 6  # 24 positions per epoch (16 + 8), batches of 8: 3 steps an epoch
    checkpoint = Path("checkpoints") / "checkpoint-4"  # inside the second epoch
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight" / checkpoint, resumed_dir / checkpoint)
    for name in ("recipe.json", "plan.json"):
        shutil.copy(tmp_path / "straight" / name, resumed_dir / name)
    ctx = setup_run(_mixed_recipe(resumed_dir, second, resume="force"))
    assert ctx.resume_from is not None and str(ctx.resume_from).endswith(str(checkpoint))
    resumed = complete_run(ctx)
    assert resumed["data_mix"] == straight["data_mix"]
    assert resumed["global_steps"] == steps

    def after_checkpoint(run):
        logged = run.trainer.state.log_history
        return [
            (r["step"], r.get("loss"), r.get("eval_loss"))
            for r in logged
            if r["step"] > 4 and "train_loss" not in r
        ]

    assert after_checkpoint(ctx) == after_checkpoint(first) != []
    ref = load_file(tmp_path / "straight" / "best" / "model.safetensors")
    got = load_file(resumed_dir / "best" / "model.safetensors")
    assert ref.keys() == got.keys() and all(ref[k].equal(got[k]) for k in ref)
