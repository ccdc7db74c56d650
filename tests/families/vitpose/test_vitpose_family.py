"""The ViTPose family and the pose task: the crop is the image processor's own, a keypoint encoded as a heatmap
and decoded by the processor comes back within a pixel, a flipped-twice crop is the crop with its left/right
keypoints back in place, the loss equals an independent computation and ignores invisible joints,
`recipes/vitpose_lora.py --demo` learns (PCK above its first evaluation), `--dry-run` counts what peft counts,
the adapter reloads with stock peft to identical heatmaps, `python -m trainers.predict` writes and draws
keypoints, and a bad annotation stops the launcher with exit status 2 and one paragraph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_rerun_end_to_end import launch_in_process

from conftest import ROOT
from trainers.recipe import load_recipe

RECIPE = "recipes/vitpose_lora.py"
STICKS = ROOT / "data" / "stick_figures"
# the first 81 instances (the first 64 training images): the test runs in seconds; the demo reads all 595
FAST = ["training.epochs=6", "data.max_train_samples=81", "reporting.plots=false"]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _val(limit: int | None = None):
    from trainers.models.vitpose import build_tiny_vitpose
    from trainers.tasks.pose.data import PoseDataset
    from trainers.tasks.pose.stick_figures import STICK_FIGURE

    model, processor = build_tiny_vitpose(num_labels=len(STICK_FIGURE.keypoints))
    size = (processor.size["width"], processor.size["height"])
    dataset = PoseDataset(
        STICKS / "val.json", "data.val", STICK_FIGURE, [1], size, STICKS / "images", limit=limit
    )
    return model, processor, dataset


def test_the_crop_is_the_processor_s_and_heatmaps_decode_back_within_a_pixel():
    from PIL import Image

    from trainers.tasks.pose.data import PoseCollator
    from trainers.tasks.pose.heatmaps import heatmap_targets
    from trainers.tasks.pose.task import PoseTask

    model, processor, dataset = _val(limit=6)
    batch = PoseCollator(processor, with_boxes=True)([dataset[i] for i in range(6)])
    record = dataset.records[0]
    with Image.open(record.path) as image:
        theirs = processor(images=[image.convert("RGB")], boxes=[[list(record.box)]], return_tensors="pt")
    assert torch.equal(batch["pixel_values"][0], theirs["pixel_values"][0])
    # golden round trip: image keypoints -> crop -> sigma-2 heatmaps on the model's grid -> processor decode
    with torch.no_grad():
        grid = model(pixel_values=batch["pixel_values"]).heatmaps.shape[-2:]
    assert tuple(grid) == (32, 24)
    targets, weights = heatmap_targets(batch["labels"].double(), (48, 64), (grid[1], grid[0]))
    assert weights.min() == 1  # every stick-figure joint is labelled and inside its crop
    task = PoseTask()
    task.processor = processor
    decoded = task._decode(targets.float(), batch["boxes"])
    for prediction, truth in zip(decoded, dataset.records, strict=True):
        error = np.linalg.norm(np.asarray(prediction["keypoints"]) - truth.keypoints[:, :2], axis=1)
        assert error.max() < 1.0, error


def test_flip_twice_is_the_identity_and_swaps_the_left_right_pairs():
    from trainers.data.augment import Augment
    from trainers.tasks.pose.data import augmented
    from trainers.tasks.pose.stick_figures import STICK_FIGURE

    _, _, dataset = _val(limit=2)
    flip = augmented(dataset, Augment(hflip=1.0), seed=0)
    item = dataset[0]
    once = flip[0]
    width = item["image"].width
    left, right = STICK_FIGURE.keypoints.index("left_hand"), STICK_FIGURE.keypoints.index("right_hand")
    head = STICK_FIGURE.keypoints.index("head")
    # x -> W - x (continuous coordinates), the head stays the head, the old right hand is the new left hand
    assert once["keypoints"][head].tolist() == [
        width - item["keypoints"][head, 0],
        item["keypoints"][head, 1],
        2,
    ]
    np.testing.assert_allclose(
        once["keypoints"][left, :2], [width - item["keypoints"][right, 0], item["keypoints"][right, 1]]
    )
    assert np.asarray(once["image"]).tolist() == np.asarray(item["image"])[:, ::-1].tolist()
    from trainers.data.augment import Sample, augment

    twice = augment(
        Sample(image=once["image"], keypoints=once["keypoints"]), flip.config, seed=0, epoch=0, index=0
    )
    np.testing.assert_allclose(twice.sample.keypoints, item["keypoints"])
    assert np.asarray(twice.sample.image).tolist() == np.asarray(item["image"]).tolist()


def test_the_loss_equals_an_independent_computation_and_invisible_joints_weigh_zero():
    from trainers.tasks.pose.task import heatmap_loss

    torch.manual_seed(0)
    heatmaps = torch.rand(2, 3, 8, 6)
    labels = torch.tensor(
        [[[10.0, 20.0, 2], [30.0, 5.0, 1], [3.0, 3.0, 0]], [[47.0, 63.0, 2], [0.0, 0.0, 2], [60.0, 10.0, 2]]]
    )  # last: x 60 is off the 48 px crop
    # by hand: UDP stride (48 - 1) / (6 - 1) = 9.4 in x, 63 / 7 = 9 in y; exp(-d^2 / 8) per axis; weight 0 for
    # v = 0 and for a joint off the grid; mean over joints of the mean squared error over batch and pixels
    xs, ys = np.arange(6), np.arange(8)
    total = 0.0
    for k in range(3):
        squared = []
        for b in range(2):
            x, y, v = labels[b, k].tolist()
            mx, my = x / 9.4, y / 9.0
            w = float(v > 0 and 0 <= mx <= 5 and 0 <= my <= 7)
            target = np.exp(-((ys[:, None] - my) ** 2) / 8) * np.exp(-((xs[None, :] - mx) ** 2) / 8)
            squared.append((heatmaps[b, k].numpy() * w - target * w) ** 2)
        total += np.mean(squared)
    loss = heatmap_loss(heatmaps, labels, (48, 64))
    assert loss.item() == pytest.approx(total / 3, rel=1e-5)
    moved = heatmaps.clone()
    moved[0, 2] += 5.0  # joint 2 of item 0 is unlabelled, joint 2 of item 1 off the crop: their heatmaps
    moved[1, 2] -= 3.0  # do not count
    assert heatmap_loss(moved, labels, (48, 64)).item() == pytest.approx(loss.item(), rel=1e-6)
    moved[0, 1] += 1.0  # a labelled joint does
    assert heatmap_loss(moved, labels, (48, 64)).item() > loss.item()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One short demo run (6 epochs of 11 steps), kept in memory for the checks below."""
    from trainers.run import complete_run, setup_run

    out = tmp_path_factory.mktemp("vitpose") / "run"
    recipe = load_recipe(ROOT / RECIPE, [*FAST, f"output_dir={out}"], demo=True)
    ctx = setup_run(recipe)
    summary = complete_run(ctx)
    return ctx, summary, out


@pytest.mark.slow
def test_the_demo_learns_pck_above_its_start(demo):
    ctx, summary, out = demo
    evals = [e for e in ctx.trainer.state.log_history if "eval_pck" in e]
    first, best = evals[0]["eval_pck"], summary["best_metric"]["value"]
    baseline = summary["baseline"]
    print(f"pck: first eval {first:.3f}, best {best:.3f}, mean-pose baseline {baseline['pck']:.3f}")
    assert summary["best_metric"]["name"] == "pck"
    assert best > first + 0.1
    assert {"mean_pixel_error", "oks_ap", "oks_ap_50", "oks_ap_75"} <= set(summary["final_metrics"])
    assert 0 < baseline["pck"] < 1 and baseline["train_instances"] == 81
    assert evals[-1]["eval_mean_pixel_error"] < evals[0]["eval_mean_pixel_error"]
    assert ctx.prepared.core.config.id2label[4] == "left_hand"
    assert (out / "eval" / "skeletons.png").stat().st_size > 0
    rows = json.loads((out / "eval" / "predictions.json").read_text())
    assert len(rows) == 6 and all(len(r["keypoints"]) == 11 for r in rows)


@pytest.mark.slow
def test_the_adapter_reloads_with_stock_peft_to_identical_outputs(demo, tmp_path):
    from peft import PeftModel
    from transformers import VitPoseForPoseEstimation

    from trainers.models.vitpose import build_tiny_vitpose

    ctx, _, out = demo
    labels = {k: getattr(ctx.prepared.core.config, k) for k in ("id2label", "label2id")}
    base, _ = build_tiny_vitpose(
        ctx.recipe.model.demo, seed=ctx.recipe.training.seed, **labels
    )  # the run's start
    base.save_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(
        VitPoseForPoseEstimation.from_pretrained(tmp_path / "base"), out / "best"
    )
    batch = ctx.data.eval_collator([ctx.data.val[i] for i in range(4)])
    trained = ctx.trainer.model.eval()
    with torch.no_grad():
        mine = trained(pixel_values=batch["pixel_values"]).heatmaps
        theirs = reloaded.eval()(pixel_values=batch["pixel_values"]).heatmaps
        assert torch.equal(mine, theirs)
        assert not torch.equal(base.eval()(pixel_values=batch["pixel_values"]).heatmaps, mine)


@pytest.mark.slow
def test_predict_writes_keypoints_for_a_folder_and_draws_them(demo, tmp_path, capsys):
    from trainers.predict import main

    _, _, out = demo
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("val_000.png", "val_001.png"):
        shutil.copy(STICKS / "images" / name, images / name)
    preds = tmp_path / "preds.jsonl"
    assert (
        main([str(out), "--images", str(images), "--out", str(preds), "--draw", "--box", "10,5,50,70"]) == 0
    )
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["box"] for r in rows] == [[10.0, 5.0, 50.0, 70.0]] * 2
    assert all(len(r["keypoints"]) == 11 and r["names"][0] == "head" for r in rows)
    assert sorted(p.name for p in (tmp_path / "preds_drawn").iterdir()) == ["val_000.png", "val_001.png"]
    assert "no --box given" not in capsys.readouterr().err
    assert main([str(out), "--images", str(images), "--out", str(preds), "--box", "1,2,3"]) == 2
    assert "--box is x,y,w,h" in capsys.readouterr().err
    assert main([str(out), "--images", str(images), "--out", str(preds)]) == 0
    assert (
        capsys.readouterr().err.count("pose: no --box given, so each image is one person box covering") == 1
    )
    assert [json.loads(line)["box"][2:] for line in preds.read_text().splitlines()] == [[80.0, 80.0]] * 2


def test_dry_run_trainable_count_is_peft_s_own():
    from peft import LoraConfig, get_peft_model

    from trainers.models.vitpose import build_tiny_vitpose

    result = launch_in_process(RECIPE, "--demo", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("trainable now:"))
    planned = int(line.split()[2].replace(",", ""))
    model, _ = build_tiny_vitpose(num_labels=11)
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["query", "value"],
        modules_to_save=["head", "backbone.embeddings"],
    )
    trainable, _ = get_peft_model(model, config).get_nb_trainable_parameters()
    assert planned == trainable > 0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda a: a.update(category_id=7),
            "category_id 7 is not among the train JSON's keypoint categories 1",
        ),
        (lambda a: a["keypoints"].__setitem__(0, 300.0), "keypoint 0 (300, "),
    ],
    ids=["unknown-category", "keypoint-outside"],
)
def test_a_bad_annotation_stops_the_launcher_with_one_paragraph(tmp_path, edit, expected):
    coco = json.loads((STICKS / "train.json").read_text())
    annotation = coco["annotations"][3]
    edit(annotation)
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(coco))
    result = launch_in_process(RECIPE, "--demo", f"data.train={bad}", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("error: "))
    assert f"{bad}: annotation id {annotation['id']} (image id {annotation['image_id']}" in line
    assert expected in line and 'on_bad_sample="skip"' in line


def test_bad_skeletons_are_recipe_errors():
    from trainers.errors import RecipeError
    from trainers.tasks.pose import Skeleton
    from trainers.tasks.pose.stick_figures import STICK_FIGURE

    crossed = Skeleton(STICK_FIGURE.keypoints, (("left_hand", "right_foot"),), STICK_FIGURE.sigmas)
    with pytest.raises(RecipeError, match="a flip turns 'left_hand' into 'right_hand'"):
        crossed.validate()
    half = Skeleton(STICK_FIGURE.keypoints, (("left_hand", "right_hand"),), STICK_FIGURE.sigmas)
    with pytest.raises(RecipeError, match="unpaired"):
        half.validate()
    with pytest.raises(RecipeError, match="one positive OKS sigma per keypoint"):
        Skeleton(STICK_FIGURE.keypoints, STICK_FIGURE.flip_pairs, (0.1,)).validate()
