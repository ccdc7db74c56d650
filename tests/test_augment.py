"""Declared augmentation: geometry follows the pixels, seeded by (seed, epoch, index), captions stay true."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from trainers.data.augment import (
    Augment,
    AugmentedDataset,
    ColorJitter,
    RandomResizedCrop,
    Sample,
    augment,
    names_a_side,
    swap_sides,
)
from trainers.errors import RecipeError

W, H = 96, 64
RED_BOX = (10, 8, 34, 30)  # xyxy, continuous: pixels 10..33 x 8..29
GREEN_BOX = (50, 30, 88, 56)
EVERYTHING = Augment(
    hflip=0.5,
    rotate_degrees=25,
    random_resized_crop=RandomResizedCrop(scale=(0.5, 1.0), ratio=(0.75, 1.33)),
    color_jitter=ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
)


def _scene() -> Sample:
    image = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(image)
    draw.rectangle((RED_BOX[0], RED_BOX[1], RED_BOX[2] - 1, RED_BOX[3] - 1), fill=(255, 0, 0))
    draw.rectangle((GREEN_BOX[0], GREEN_BOX[1], GREEN_BOX[2] - 1, GREEN_BOX[3] - 1), fill=(0, 255, 0))
    centres = [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 2.0] for b in (RED_BOX, GREEN_BOX)]
    return Sample(
        image=image,
        boxes=np.array([RED_BOX, GREEN_BOX], dtype=float),
        box_labels=["red", "green"],
        keypoints=np.array(centres),
        caption="a red square left of a green one",
    )


def _pixel_box(image: Image.Image, channel: int) -> tuple[float, float, float, float] | None:
    """Continuous xyxy extent of the pixels where `channel` dominates (bilinear fringe cut at half)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    others = [c for c in range(3) if c != channel]
    mask = (rgb[..., channel] > 100) & (rgb[..., channel] > 2 * rgb[..., others].max(-1))
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _same(a, b) -> bool:
    return (
        a.sample.image.tobytes() == b.sample.image.tobytes()
        and np.array_equal(a.sample.boxes, b.sample.boxes)
        and np.array_equal(a.sample.keypoints, b.sample.keypoints)
        and a.sample.caption == b.sample.caption
        and a.applied == b.applied
    )


# ------------------------------------------------------------------------------------------------ geometry


def test_flip_twice_is_the_identity_for_pixels_boxes_keypoints_and_caption() -> None:
    config = Augment(hflip=1.0, flip_pairs=((0, 1),))
    sample = _scene()
    once = augment(sample, config, seed=0, epoch=0, index=0)
    assert once.applied["hflip"] is True
    assert not np.array_equal(once.sample.boxes, sample.boxes)
    twice = augment(once.sample, config, seed=0, epoch=0, index=0)
    assert twice.sample.image.tobytes() == sample.image.tobytes()
    np.testing.assert_allclose(twice.sample.boxes, sample.boxes, atol=1e-9)
    np.testing.assert_allclose(twice.sample.keypoints, sample.keypoints, atol=1e-9)
    assert twice.sample.caption == sample.caption and twice.sample.box_labels == ["red", "green"]
    # one flip: x -> W - x, and the box stays a valid xyxy box
    np.testing.assert_allclose(once.sample.boxes[0], [W - RED_BOX[2], RED_BOX[1], W - RED_BOX[0], RED_BOX[3]])


@pytest.mark.parametrize("index", range(12))
def test_boxes_and_keypoints_follow_the_pixels(index: int) -> None:
    """Crop + flip + rotation (up to 25 degrees): each box is the enclosing box of its rectangle's pixels."""
    config = Augment(
        hflip=0.5,
        rotate_degrees=25,
        random_resized_crop=RandomResizedCrop(scale=(0.5, 1.0), ratio=(0.75, 1.33), size=(80, 60)),
    )
    out = augment(_scene(), config, seed=7, epoch=0, index=index)
    assert out.sample.image.size == (80, 60)
    assert abs(out.applied["rotate"]) > 0
    kept = dict(zip(out.sample.box_labels, out.sample.boxes, strict=True))
    for label, channel in (("red", 0), ("green", 1)):
        pixels = _pixel_box(out.sample.image, channel)
        if label not in kept:  # dropped: its pixels are (almost) gone
            assert pixels is None or (pixels[2] - pixels[0]) * (pixels[3] - pixels[1]) <= 4
            continue
        assert pixels is not None
        np.testing.assert_allclose(kept[label], pixels, atol=1.5, err_msg=f"{label} {out.applied}")
    for point, label in zip(out.sample.keypoints, ["red", "green"], strict=True):
        inside = 0 <= point[0] < 80 and 0 <= point[1] < 60
        assert (point[2] == 2.0) == inside
        margin = 2  # whole rectangle visible (not cut by an edge): its keypoint is its pixels' centre
        if (
            inside
            and label in kept
            and kept[label][0] > margin
            and kept[label][2] < 80 - margin
            and kept[label][1] > margin
            and kept[label][3] < 60 - margin
        ):
            rgb = np.asarray(out.sample.image).astype(int)
            ys, xs = np.nonzero(rgb[..., 0 if label == "red" else 1] > 100)
            assert abs(point[0] - (xs.mean() + 0.5)) < 1.0 and abs(point[1] - (ys.mean() + 0.5)) < 1.0


def test_rotation_turns_counter_clockwise_and_boxes_enclose_the_rotated_corners() -> None:
    out = augment(_scene(), Augment(rotate_degrees=30), seed=1, epoch=0, index=3)
    angle = out.applied["rotate"]
    # the red square sits up-left of the centre: a counter-clockwise turn moves it down (and left)
    red = _pixel_box(out.sample.image, 0)
    moved_down = (red[1] + red[3]) / 2 > (RED_BOX[1] + RED_BOX[3]) / 2
    assert moved_down == (angle > 0)
    np.testing.assert_allclose(out.sample.boxes[0], red, atol=1.5)


def test_keypoints_leaving_the_image_get_visibility_zero() -> None:
    corner = Sample(image=Image.new("RGB", (W, H)), keypoints=np.array([[1.0, 1.0, 2.0], [48.0, 32.0, 1.0]]))
    out = augment(corner, Augment(rotate_degrees=45), seed=0, epoch=0, index=0)
    assert abs(out.applied["rotate"]) > 20  # far enough for the corner point to leave the canvas
    assert out.sample.keypoints[0, 2] == 0.0 and out.sample.keypoints[1, 2] == 1.0
    np.testing.assert_allclose(out.sample.keypoints[1, :2], [48.0, 32.0])  # the centre does not move


def test_keypoint_flip_swaps_left_and_right_partners() -> None:
    # 0 = left eye, 1 = right eye, 2 = nose, 3 = left ear, 4 = right ear (a face seen from the front)
    points = np.array([[60, 20, 2], [36, 20, 2], [48, 30, 2], [70, 22, 1], [26, 22, 0]], dtype=float)
    sample = Sample(image=Image.new("RGB", (W, H)), keypoints=points)
    out = augment(sample, Augment(hflip=1.0, flip_pairs=((0, 1), (3, 4))), seed=0, epoch=0, index=0)
    got = out.sample.keypoints
    np.testing.assert_allclose(got[0], [W - 36, 20, 2])  # the left eye is where the mirrored right eye lands
    np.testing.assert_allclose(got[1], [W - 60, 20, 2])
    np.testing.assert_allclose(got[2], [W - 48, 30, 2])
    np.testing.assert_allclose(got[3], [W - 26, 22, 0])  # visibility travels with its keypoint
    np.testing.assert_allclose(got[4], [W - 70, 22, 1])
    # without pairs the labels would be wrong: index 0 would sit at the mirrored left eye
    plain = augment(sample, Augment(hflip=1.0), seed=0, epoch=0, index=0).sample.keypoints
    np.testing.assert_allclose(plain[0], [W - 60, 20, 2])
    with pytest.raises(RecipeError, match="flip_pairs"):
        augment(sample, Augment(hflip=1.0, flip_pairs=((0, 7),)), seed=0, epoch=0, index=0)


def test_per_box_keypoints_are_dropped_with_their_box() -> None:
    sample = _scene()
    sample.keypoints = sample.keypoints[:, None, :]  # (N=2, K=1, 3)
    config = Augment(
        random_resized_crop=RandomResizedCrop(scale=(0.1, 0.1), ratio=(1.0, 1.0)), min_box_area=20
    )
    for index in range(50):
        out = augment(sample, config, seed=0, epoch=0, index=index)
        if out.dropped_boxes == 1:
            break
    else:
        pytest.fail("no crop dropped exactly one box in 50 draws")
    assert len(out.sample.boxes) == len(out.sample.keypoints) == len(out.sample.box_labels) == 1


def test_crop_drops_small_boxes_and_counts_them() -> None:
    """The count equals what the crop window implies; the labels stay with their boxes."""
    boxes = np.array([[x, y, x + 6, y + 6] for x in range(0, W - 6, 12) for y in range(0, H - 6, 12)], float)
    labels = np.arange(len(boxes))
    sample = Sample(image=Image.new("RGB", (W, H)), boxes=boxes, box_labels=labels)
    config = Augment(
        random_resized_crop=RandomResizedCrop(scale=(0.2, 0.4), ratio=(0.8, 1.25)),
        min_box_area=12.0,
        min_box_visibility=0.5,
    )
    total = 0
    for index in range(8):
        out = augment(sample, config, seed=3, epoch=0, index=index)
        left, top, w, h = out.applied["crop"]
        x0, y0 = boxes[:, 0].clip(left, left + w), boxes[:, 1].clip(top, top + h)
        x1, y1 = boxes[:, 2].clip(left, left + w), boxes[:, 3].clip(top, top + h)
        area = (x1 - x0) * (y1 - y0)  # output size = input size, so the scale is W/w, H/h
        out_area = area * (W / w) * (H / h)
        keep = (area > 0) & (out_area >= 12.0) & (area / 36.0 >= 0.5)
        assert out.dropped_boxes == int((~keep).sum()) == len(boxes) - len(out.sample.boxes)
        assert list(out.sample.box_labels) == list(labels[keep])
        total += out.dropped_boxes
        assert (out.sample.boxes[:, [0, 2]] >= 0).all() and (out.sample.boxes[:, [0, 2]] <= W).all()
    assert total > 0


# ------------------------------------------------------------------------------------------------ seeding


def test_same_seed_epoch_index_gives_identical_output_whatever_the_global_rng() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = augment(_scene(), EVERYTHING, seed=11, epoch=2, index=5)
    state = np.random.get_state()[1].copy(), random.getstate(), torch.random.get_rng_state().clone()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    second = augment(_scene(), EVERYTHING, seed=11, epoch=2, index=5)
    assert _same(first, second)
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    augment(_scene(), EVERYTHING, seed=11, epoch=2, index=5)
    assert np.array_equal(np.random.get_state()[1], state[0]) and random.getstate() == state[1]
    assert torch.equal(torch.random.get_rng_state(), state[2])  # the global streams were not drawn from


def test_different_epoch_index_or_seed_gives_a_different_augmentation() -> None:
    base = augment(_scene(), EVERYTHING, seed=11, epoch=2, index=5)
    for other in (
        dict(seed=11, epoch=3, index=5),
        dict(seed=11, epoch=2, index=6),
        dict(seed=12, epoch=2, index=5),
    ):
        out = augment(_scene(), EVERYTHING, **other)
        assert out.applied["rotate"] != base.applied["rotate"]
        assert out.sample.image.tobytes() != base.sample.image.tobytes()


def test_ops_draw_from_their_own_streams() -> None:
    """Switching colour jitter off leaves the crop, flip and angle of every sample unchanged."""
    geometric = Augment(hflip=0.5, rotate_degrees=25, random_resized_crop=EVERYTHING.random_resized_crop)
    for index in range(6):
        a = augment(_scene(), EVERYTHING, seed=0, epoch=0, index=index).applied
        b = augment(_scene(), geometric, seed=0, epoch=0, index=index).applied
        assert {k: v for k, v in a.items() if k != "color"} == b


class _Items:
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        s = _scene()
        return {"image": s.image, "boxes": s.boxes, "box_labels": s.box_labels, "caption": s.caption, "id": i}


def test_two_ranks_and_a_resumed_run_see_what_one_uninterrupted_rank_sees() -> None:
    one = AugmentedDataset(_Items(), EVERYTHING, seed=5)
    epochs = {}
    for epoch in range(3):
        one.set_epoch(epoch)
        epochs[epoch] = [one[i] for i in range(8)]
    assert epochs[0][0]["image"].tobytes() != epochs[1][0]["image"].tobytes()
    for rank in range(2):  # a fresh copy per rank (as a DataLoader worker gets), strided shard
        shard = pickle.loads(pickle.dumps(AugmentedDataset(_Items(), EVERYTHING, seed=5)))
        for epoch in (2, 1):  # a resumed run starts straight at a later epoch
            shard.set_epoch(epoch)
            for i in range(rank, 8, 2):
                item = shard[i]
                assert item["image"].tobytes() == epochs[epoch][i]["image"].tobytes()
                assert np.array_equal(item["boxes"], epochs[epoch][i]["boxes"])
                assert item["caption"] == epochs[epoch][i]["caption"] and item["id"] == i
                assert item["dropped_boxes"] == 2 - len(item["boxes"])


# ------------------------------------------------------------------------------------------------ captions


def test_swap_sides_is_word_bounded_and_keeps_case() -> None:
    assert (
        swap_sides("a circle left of a square, right of a star")
        == "a circle right of a square, left of a star"
    )
    assert swap_sides("Left: red. RIGHT: blue.") == "Right: red. LEFT: blue."
    assert (
        swap_sides("the leftmost icon, a left-hand menu, rightwards")
        == "the rightmost icon, a right-hand menu, leftwards"
    )
    assert swap_sides("leftover righteous bright copyright") == "leftover righteous bright copyright"
    assert names_a_side(["a cat", "a dog on the Left"]) and not names_a_side("bright lights")


def test_flipped_caption_is_swapped_by_default() -> None:
    out = augment(_scene(), Augment(hflip=1.0), seed=0, epoch=0, index=0)
    assert out.sample.caption == "a red square right of a green one"
    many = Sample(image=_scene().image, caption=["Left is red", "no side here"])
    assert augment(many, Augment(hflip=1.0), seed=0, epoch=0, index=0).sample.caption == [
        "Right is red",
        "no side here",
    ]


def test_no_flip_leaves_side_naming_captions_unflipped() -> None:
    config = Augment(hflip=1.0, caption_sides="no_flip")
    sided = augment(_scene(), config, seed=0, epoch=0, index=0)
    assert sided.applied["hflip"].startswith("skipped")
    assert sided.sample.image.tobytes() == _scene().image.tobytes()
    assert sided.sample.caption == _scene().caption
    plain = _scene()
    plain.caption = "a red square and a green one"
    flipped = augment(plain, config, seed=0, epoch=0, index=0)
    assert flipped.applied["hflip"] is True and flipped.sample.image.tobytes() != plain.image.tobytes()


# ------------------------------------------------------------------------------------------------ colour / config


def test_color_jitter_changes_colours_not_geometry() -> None:
    config = Augment(color_jitter=ColorJitter(brightness=0.4, hue=0.1))
    out = augment(_scene(), config, seed=0, epoch=0, index=1)
    assert set(out.applied["color"]) == {"brightness", "hue"}
    assert out.sample.image.tobytes() != _scene().image.tobytes()
    np.testing.assert_array_equal(out.sample.boxes, _scene().boxes)
    grey = Sample(image=Image.new("L", (8, 8), 100))
    assert set(augment(grey, config, seed=0, epoch=0, index=1).applied["color"]) == {"brightness"}


@pytest.mark.parametrize(
    "config, needle",
    [
        (Augment(hflip=1.5), "data.augment.hflip"),
        (Augment(rotate_degrees=-3), "data.augment.rotate_degrees"),
        (Augment(caption_sides="drop"), "data.augment.caption_sides"),
        (Augment(flip_pairs=((1, 1),)), "data.augment.flip_pairs"),
        (Augment(flip_pairs=((1, 2), (2, 3))), "data.augment.flip_pairs"),
        (Augment(color_jitter=ColorJitter(hue=0.7)), "data.augment.color_jitter.hue"),
        (
            Augment(random_resized_crop=RandomResizedCrop(scale=(0.9, 0.2))),
            "data.augment.random_resized_crop.scale",
        ),
        (Augment(min_box_visibility=2.0), "data.augment.min_box_visibility"),
    ],
)
def test_invalid_settings_name_their_key(config: Augment, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle.replace(".", r"\.")):
        config.validate("data.augment")


def test_defaults_do_nothing() -> None:
    config = Augment()
    config.validate()
    assert not config.active
    out = augment(_scene(), config, seed=0, epoch=0, index=0)
    assert out.sample.image.tobytes() == _scene().image.tobytes() and out.applied == {}
