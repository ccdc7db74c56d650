"""The shapes scorer (objects and relation read out of a caption, compared with the image's ground truth) and
the constant-caption baseline that evaluation reports next to the model's scores."""

from __future__ import annotations

import json
import random

import pytest

from conftest import ROOT, SHAPES
from trainers.metrics.captions import CaptionScorer
from trainers.recipe.config import mean
from trainers.tasks.captioning.baseline import (
    BaselineUnavailable,
    constant_caption_baseline,
    plan_baseline,
)
from trainers.tasks.captioning.shapes import (
    COLORS,
    RELATIONS,
    _split_scenes,
    is_shapes_caption_set,
    parse_caption,
    score_shapes_captions,
)
from trainers.tasks.captioning.shapes import (
    SHAPES as SHAPE_NAMES,
)

TRUTH = {
    0: "a red circle above a blue square",
    1: "a green triangle left of a yellow circle",
    2: "a blue square right of a blue triangle",
    3: "a red square below a yellow triangle",
}


def test_parse_caption_reads_objects_in_order_and_the_relation():
    parsed = parse_caption("A Red circle, left of a BLUE square.")
    assert parsed.objects == (("red", "circle"), ("blue", "square"))
    assert parsed.relation == "left of" and parsed.is_scene
    assert parse_caption("a yellow triangle right of a green circle").relation == "right of"
    assert parse_caption("a red red square").objects == (("red", "square"),)
    nothing = parse_caption("a picture of something")
    assert nothing.objects == () and nothing.relation is None and not nothing.is_scene
    assert not parse_caption("a red circle and a blue square").is_scene  # no relation


def test_perfect_captions_score_one():
    score = score_shapes_captions(TRUTH, {k: [v] for k, v in TRUTH.items()})
    assert (score.object_accuracy, score.relation_accuracy, score.exact_match) == (1.0, 1.0, 1.0)
    assert score.images == 4 and score.unparsed == 0


def test_hand_written_captions_score_what_they_get_right():
    predictions = {
        0: "a red circle above a blue square",  # all right: 2 objects, relation
        1: "a green triangle right of a red circle",  # first object right; second: colour wrong, shape right
        2: "a blue triangle right of a blue square",  # objects swapped: neither position right; relation right
        3: "nothing to see",  # unparsed
    }
    score = score_shapes_captions(predictions, TRUTH)
    assert score.object_accuracy == pytest.approx(3 / 8)
    assert score.color_accuracy == pytest.approx((2 + 1 + 2 + 0) / 8)
    assert score.shape_accuracy == pytest.approx((2 + 2 + 0 + 0) / 8)
    assert score.relation_accuracy == pytest.approx(2 / 4)
    assert score.exact_match == pytest.approx(1 / 4)
    assert score.unparsed == 1


def test_a_constant_caption_is_scored_per_image():
    score = score_shapes_captions(dict.fromkeys(TRUTH, "a red circle above a blue square"), TRUTH)
    assert score.object_accuracy == pytest.approx(2 / 8)  # right for image 0 only
    assert score.relation_accuracy == pytest.approx(1 / 4)


def test_scorer_rejects_mismatched_ids_and_non_shapes_references():
    with pytest.raises(ValueError, match="same ids"):
        score_shapes_captions({0: "a red circle"}, {1: "a red circle above a blue square"})
    with pytest.raises(ValueError, match="not a shapes caption"):
        score_shapes_captions({0: "a dog"}, {0: ["a dog on a sofa"]})


def test_shipped_captions_parse_to_the_scenes_that_were_drawn():
    """The ground truth the scorer reads from a caption is the scene the generator rendered."""
    for split in ("train", "val"):
        captions = json.loads((SHAPES / f"{split}.json").read_text())
        scenes = _split_scenes(split, len(captions), seed=0)
        assert set(scenes) == set(captions)
        for name, scene in scenes.items():
            parsed = parse_caption(captions[name])
            assert parsed.objects == (
                (scene.first.color_name, scene.first.shape),
                (scene.second.color_name, scene.second.shape),
            ), name
            assert parsed.relation == scene.relation, name
    assert is_shapes_caption_set(json.loads((SHAPES / "val.json").read_text()).values())
    assert not is_shapes_caption_set(["a red circle above a blue square", "a dog"])
    assert not is_shapes_caption_set([])


def test_uniform_random_captions_get_about_one_object_in_twelve():
    """Chance level, as the README states it: 4 colours x 3 shapes per named object, 4 relations."""
    val = json.loads((SHAPES / "val.json").read_text())
    rng = random.Random(0)
    objects, relations = [], []
    for _ in range(200):
        guesses = {
            k: f"a {rng.choice(list(COLORS))} {rng.choice(SHAPE_NAMES)} {rng.choice(RELATIONS)} "
            f"a {rng.choice(list(COLORS))} {rng.choice(SHAPE_NAMES)}"
            for k in val
        }
        score = score_shapes_captions(guesses, val)
        objects.append(score.object_accuracy)
        relations.append(score.relation_accuracy)
    assert sum(objects) / len(objects) == pytest.approx(1 / 12, abs=0.01)
    assert sum(relations) / len(relations) == pytest.approx(1 / 4, abs=0.02)


# ------------------------------------------------------------------------------------- constant baseline


def test_the_baseline_is_the_best_scoring_constant_caption_not_the_most_frequent():
    """The most frequent training caption (3 of 6, describing no validation image) scores below rarer ones that
    describe one exactly: the baseline is the best constant caption, scored by the model's scorer."""
    train = ["a yellow triangle below a green circle"] * 3 + [TRUTH[0]] * 2 + [TRUTH[2]]
    val = [[TRUTH[k]] for k in sorted(TRUTH)]
    composite = mean("rouge_l", "cider_d")
    baseline = constant_caption_baseline(train, val, ("rouge_l", "cider_d"), (composite,))
    with CaptionScorer(
        ("rouge_l", "cider_d")
    ) as scorer:  # what the model would get for each constant caption
        direct = {
            caption: scorer.score(dict.fromkeys(range(4), caption), dict(enumerate(val)))
            for caption in dict.fromkeys(train)
        }
    score = {caption: (d["rouge_l"] + d["cider_d"]) / 2 for caption, d in direct.items()}
    best = max(score, key=score.get)
    assert best != "a yellow triangle below a green circle"  # the most frequent one is not the best here
    assert (baseline.caption, baseline.train_count, baseline.train_size, baseline.val_size) == (
        best,
        train.count(best),
        6,
        4,
    )
    assert baseline.candidates == 3
    assert baseline.scores["rouge_l"] == pytest.approx(direct[best]["rouge_l"])
    assert baseline.scores["cider_d"] == pytest.approx(direct[best]["cider_d"])
    assert baseline.scores["val_score"] == pytest.approx(score[best])
    assert all(baseline.scores["val_score"] >= value for value in score.values())
    assert list(baseline.scores)[0] == "val_score"  # the composite leads the plan line
    assert baseline.metrics()["baseline_val_score"] == baseline.scores["val_score"]
    line = baseline.render()
    assert line.startswith("baseline:") and f"{best!r} (best of 3 distinct training captions" in line
    assert f"val_score={baseline.scores['val_score']:.3f}" in line


def test_plan_baseline_of_the_demo_data_and_of_missing_data(monkeypatch):
    from trainers.recipe.loading import load_recipe

    monkeypatch.chdir(ROOT)  # the recipe's data paths are relative to the repository root
    recipe = load_recipe(
        ROOT / "recipes/blip_progressive.py",
        ["evaluation.metrics=rouge_l,cider_d", "early_stopping.metric=rouge_l"],
        demo=True,
    )
    baseline = plan_baseline(recipe)
    train = json.loads((SHAPES / "train.json").read_text())
    val = json.loads((SHAPES / "val.json").read_text())
    assert baseline.train_size == len(train) and baseline.val_size == 48
    assert baseline.candidates == len({" ".join(c.split()) for c in train.values()})
    with CaptionScorer(("rouge_l", "cider_d")) as scorer:  # the most frequent caption scores no higher
        frequent = max(set(train.values()), key=list(train.values()).count)
        refs = {i: [c] if isinstance(c, str) else c for i, c in enumerate(val.values())}
        scores = scorer.score(dict.fromkeys(refs, frequent), refs)
    assert baseline.scores["rouge_l"] >= scores["rouge_l"]
    assert set(baseline.scores) == {"rouge_l", "cider_d"}

    missing = load_recipe(ROOT / "recipes/blip_progressive.py")  # data/captions/ is not shipped
    unavailable = plan_baseline(missing)
    assert isinstance(unavailable, BaselineUnavailable)
    assert (
        unavailable.render()
        == "baseline:      not computed (data/captions/train.json: caption file not found)"
    )


def test_the_baseline_is_computed_once_per_inputs_and_read_back_in_another_process(tmp_path, monkeypatch):
    """The disk copy serves a later process (no caption is scored again) and equals the computed one; other
    metrics make another file."""
    import subprocess
    import sys

    from trainers.tasks.captioning import baseline as module

    monkeypatch.setenv(module.CACHE_DIR_ENV, str(tmp_path))
    train = [TRUTH[0], TRUTH[0], TRUTH[2]]
    val = [[TRUTH[k]] for k in sorted(TRUTH)]
    computed = constant_caption_baseline(train, val, ("rouge_l",))
    assert len(list(tmp_path.rglob("*.json"))) == 1
    again = """
import json, sys
from trainers.metrics.captions import CaptionScorer
from trainers.tasks.captioning.baseline import constant_caption_baseline
CaptionScorer.score = lambda *a, **k: sys.exit("scored again")
b = constant_caption_baseline(*json.loads(sys.argv[1]), ("rouge_l",))
print(json.dumps([b.caption, b.scores, b.candidates]))
"""
    result = subprocess.run(
        [sys.executable, "-c", again, json.dumps([train, val])], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [computed.caption, computed.scores, computed.candidates]
    constant_caption_baseline(train, val, ("rouge_l", "cider_d"))
    assert len(list(tmp_path.rglob("*.json"))) == 2
