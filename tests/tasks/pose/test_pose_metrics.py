"""The pose building blocks on hand-built cases: UDP Gaussian heatmap targets decode back to the joint, the
target-weighted heatmap MSE equals its value worked out by hand, and PCK, mean pixel error and OKS AP
(pycocotools, recipe sigmas) equal independently computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.tasks.pose.heatmaps import decode_argmax, heatmap_targets, joints_mse_loss, udp_stride
from trainers.tasks.pose.metrics import PoseInstance, mean_pixel_error, oks_ap, pck

INPUT, HEATMAP = (192, 256), (48, 64)  # (width, height): ViTPose's 256x192 crop and its 64x48 heatmap


def test_udp_targets_peak_at_the_joint_and_decode_back_to_it():
    sx, sy = udp_stride(INPUT, HEATMAP)
    assert (sx, sy) == (191 / 47, 255 / 63)
    keypoints = torch.tensor(
        [[[10 * sx, 20 * sy, 2.0], [5.0, 5.0, 0.0], [400.0, 10.0, 2.0]]], dtype=torch.float64
    )
    targets, weights = heatmap_targets(keypoints, INPUT, HEATMAP)
    assert targets.shape == (1, 3, 64, 48) and weights.tolist() == [[1.0, 0.0, 0.0]]  # unlabelled; outside
    assert targets[0, 0, 20, 10] == 1.0 and targets[0, 0].argmax() == 20 * 48 + 10
    assert targets[0, 0, 20, 12] == pytest.approx(math.exp(-4 / 8))  # sigma 2: exp(-d^2 / (2 sigma^2))
    assert targets[0, 1:].abs().sum() == 0
    decoded = decode_argmax(targets, INPUT)[0, 0]
    torch.testing.assert_close(decoded, keypoints[0, 0, :2])


def test_the_heatmap_loss_is_the_target_weighted_mean_over_joints_of_the_mse():
    targets = torch.rand(2, 2, 8, 6)
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert joints_mse_loss(targets, targets, weights) == 0
    shifted = targets + torch.tensor([1.0, 3.0])[None, :, None, None]  # joint 1 is off by 3 but weighs 0
    assert joints_mse_loss(shifted, targets, weights).item() == pytest.approx((1.0 + 0.0) / 2)


def instance(points, box=(0.0, 0.0, 100.0, 100.0), image_id=1, score=None):
    return PoseInstance(np.asarray(points, dtype=np.float64), box, image_id, score)


def test_pck_and_mean_pixel_error_on_a_hand_built_case():
    truth = instance([[50, 20, 2], [50, 40, 2], [10, 10, 0]], box=(0.0, 0.0, 100.0, 50.0))
    pred = instance([[60, 20, 1], [50, 65, 1], [900, 900, 1]])  # errors 10 and 25 px; the third is unlabelled
    assert pck([pred], [truth], 0.2) == 0.5  # 0.2 x max(100, 50) = 20 px
    assert mean_pixel_error([pred], [truth]) == 17.5


def test_oks_ap_equals_the_hand_computed_value_with_recipe_sigmas():
    """OKS = mean over labelled joints of exp(-d^2 / (2 area (2 sigma)^2)); area 100 x 100, sigma 0.1: one
    joint 30 px off gives (2 + exp(-900 / 800)) / 3 = 0.7749, a hit at OKS thresholds .50 to .75 (6 of 10)."""
    sigmas = (0.1, 0.1, 0.1)
    truth = instance([[20, 20, 2], [50, 50, 2], [80, 80, 2]])
    exact = instance([[20, 20, 1], [50, 50, 1], [80, 80, 1]], score=0.9)
    off = instance([[20, 20, 1], [50, 50, 1], [110, 80, 1]], score=0.9)
    assert (2 + math.exp(-900 / 800)) / 3 == pytest.approx(0.7749, abs=1e-4)
    assert oks_ap([exact], [truth], sigmas) == pytest.approx(
        {"oks_ap": 1.0, "oks_ap_50": 1.0, "oks_ap_75": 1.0}
    )
    assert oks_ap([off], [truth], sigmas) == pytest.approx(
        {"oks_ap": 0.6, "oks_ap_50": 1.0, "oks_ap_75": 1.0}
    )


def test_keypoints_survive_flip_twice_with_their_pairs_and_a_scale_round_trip():
    from PIL import Image

    from trainers.data.augment import Augment, RandomResizedCrop, Sample, augment

    keypoints = np.array([[[10.0, 5.0, 2], [30.0, 6.0, 2], [20.0, 40.0, 1], [0.0, 0.0, 0]]])  # per box, K = 4
    sample = Sample(
        image=Image.new("RGB", (64, 48)), boxes=np.array([[2.0, 2.0, 40.0, 45.0]]), keypoints=keypoints
    )
    flip = Augment(hflip=1.0, flip_pairs=((0, 1),))
    once = augment(sample, flip, seed=0, epoch=0, index=0).sample
    # x -> 64 - x, and the left/right pair swaps: the new joint 0 is the old joint 1, mirrored
    assert once.keypoints[0, 0].tolist() == [34.0, 6.0, 2.0] and once.keypoints[0, 1].tolist() == [
        54.0,
        5.0,
        2.0,
    ]
    np.testing.assert_allclose(augment(once, flip, seed=0, epoch=0, index=0).sample.keypoints, keypoints)
    ratio = (64 / 48, 64 / 48)
    up = Augment(random_resized_crop=RandomResizedCrop(scale=(1.0, 1.0), ratio=ratio, size=(128, 96)))
    down = Augment(random_resized_crop=RandomResizedCrop(scale=(1.0, 1.0), ratio=ratio, size=(64, 48)))
    big = augment(sample, up, seed=0, epoch=0, index=0).sample
    np.testing.assert_allclose(big.keypoints[0, :3, :2], keypoints[0, :3, :2] * 2)
    np.testing.assert_allclose(
        augment(big, down, seed=0, epoch=0, index=0).sample.keypoints[0, :3], keypoints[0, :3]
    )
