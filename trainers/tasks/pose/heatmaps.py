"""Gaussian heatmap targets and the heatmap loss for top-down pose models (ViTPose), in torch.

`VitPoseForPoseEstimation` raises `NotImplementedError` when given labels, so the loss is ours. It mirrors
mmpose's `JointsMSELoss(use_target_weight=True)` (the original ViTPose training loss): the mean over joints
of MSE(pred * w, target * w), w = 1 for a labelled joint inside the heatmap, else 0. Targets are Gaussians
of sigma 2 heatmap pixels with UDP-consistent coordinates (unbiased data processing: the first and last
input pixel centres map onto the first and last heatmap pixel centres, stride (in - 1) / (out - 1)), so a
joint encoded and decoded comes back where it was, with no half-pixel shift.
"""

from __future__ import annotations

import torch

SIGMA = 2.0


def udp_stride(input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> tuple[float, float]:
    """(x, y) input pixels per heatmap pixel under UDP; sizes are (width, height)."""
    return ((input_size[0] - 1) / (heatmap_size[0] - 1), (input_size[1] - 1) / (heatmap_size[1] - 1))


def heatmap_targets(
    keypoints: torch.Tensor, input_size: tuple[int, int], heatmap_size: tuple[int, int], sigma: float = SIGMA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (B, K, H, W) and per-joint weights (B, K) from keypoints (B, K, 3) of (x, y, visibility) in
    input-crop pixels; a joint that is unlabelled (visibility 0) or falls outside the heatmap weighs 0."""
    stride_x, stride_y = udp_stride(input_size, heatmap_size)
    width, height = heatmap_size
    mu_x = keypoints[..., 0] / stride_x
    mu_y = keypoints[..., 1] / stride_y
    xs = torch.arange(width, dtype=keypoints.dtype, device=keypoints.device)
    ys = torch.arange(height, dtype=keypoints.dtype, device=keypoints.device)
    gx = torch.exp(-((xs[None, None, :] - mu_x[..., None]) ** 2) / (2 * sigma**2))  # (B, K, W)
    gy = torch.exp(-((ys[None, None, :] - mu_y[..., None]) ** 2) / (2 * sigma**2))  # (B, K, H)
    targets = gy[..., :, None] * gx[..., None, :]
    inside = (mu_x >= 0) & (mu_x <= width - 1) & (mu_y >= 0) & (mu_y <= height - 1)
    weights = ((keypoints[..., 2] > 0) & inside).to(keypoints.dtype)
    return targets * weights[..., None, None], weights


def joints_mse_loss(predicted: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over joints of MSE(pred * w, target * w) over batch and pixels (mmpose JointsMSELoss).

    In float32 whatever the model's precision: a bf16 heatmap near a Gaussian peak keeps ~2-3 significant
    digits, and the squared differences of 64x48 pixels summed in bf16 lose the small ones entirely.
    """
    with torch.autocast(predicted.device.type, enabled=False):
        w = weights[..., None, None].float()
        per_joint = ((predicted.float() * w - targets.float() * w) ** 2).mean(dim=(0, 2, 3))
        return per_joint.mean()


def decode_argmax(heatmaps: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """(B, K, 2) input-crop coordinates of each heatmap's maximum (UDP inverse; no sub-pixel refinement)."""
    batch, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, joints, -1).argmax(dim=-1)
    stride_x, stride_y = udp_stride(input_size, (width, height))
    return torch.stack(
        [(flat % width).to(heatmaps.dtype) * stride_x, (flat // width).to(heatmaps.dtype) * stride_y], -1
    )
