"""The symmetric InfoNCE loss over the global batch: embeddings gathered from every rank with their gradient.

Every rank computes the same loss over all N = sum of the ranks' batch sizes pairs (open_clip's
`gather_with_grad=True, local_loss=False`). `torch.distributed.nn.functional.all_gather` sends each rank's
gradient for the gathered copies back to their owner (summed), so rank r's embeddings get world x dL/df_r;
DDP / ZeRO then average the parameter gradients over the ranks: the step's gradient is exactly dL/dθ of one
process holding the whole global batch. Ranks whose batches differ in size (the last, uneven batch) are
padded to the largest and cut back after gathering.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, differentiable with respect to this rank's rows."""
    world = _world()
    if world == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    size = torch.tensor([features.shape[0]], device=features.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s) for s in sizes]
    longest = max(sizes_list)
    padded = (
        F.pad(features, (0, 0, 0, longest - features.shape[0])) if features.shape[0] < longest else features
    )
    gathered = all_gather(padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes_list, strict=True)])


def symmetric_infonce(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: cross-entropy over texts→images and images→texts, pair i matching pair i, averaged."""
    # float32 outside autocast: with logit_scale up to ln 100 a bf16 similarity (3 significant digits) moves a
    # logit by up to ~0.4, and autocast would run this matmul in bf16
    with torch.autocast(text.device.type, enabled=False):
        logits = logit_scale.float().exp() * text.float() @ image.float().t()
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def global_contrastive_loss(
    text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """The loss of the global batch, the same value on every rank."""
    return symmetric_infonce(gather_with_grad(text), gather_with_grad(image), logit_scale)


def local_contrastive_loss(
    text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """The per-rank loss (negatives from this rank's batch only): what a plain DDP port of CLIP computes."""
    return symmetric_infonce(text, image, logit_scale)
