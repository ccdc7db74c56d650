"""Activations of a model whose weights are not here (`--dry-run` of a real recipe), measured on the meta device.

The dry-run builds such a model from its known architecture on the meta device: shapes and dtypes, no data.
Autograd runs there too, so one forward + backward of a batch of meta tensors of the run's shapes calls the
same saved-tensor hooks as a real pass, and `memory_plan.activation_profile` counts the same bytes (storages
told apart by their storage object, since meta tensors have no addresses). Without a processor the batch is
built from the model's config and its forward's arguments: images at the config's `image_size` (3 channels),
token ids of `TEXT_TOKENS` (or the recipe's `data.max_length`), labels of the right shape (one class per image,
or one per token). The loss is the model's own when it computes one from those labels, else (ViTPose, whose
loss is the task's) the mean of its first output: the measured bytes then leave out the task loss's own saved
tensors, small beside the model's.

Not every model runs on data-free tensors: PaliGemma checks that a prompt holds as many image tokens as the
image gives features (a count that needs data), DETR and Florence-2 take their image size from their image
processor (and DETR's pixel mask reaches a `mask.all()`), Qwen2-VL's patch grid and SmolVLM's tiles come from
theirs. Those say why in one line and the plan shows their activations as not measured.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

TEXT_TOKENS = 32  # token ids per sample when the recipe sets no data.max_length (a short caption)


def _find(config: Any, key: str) -> Any:
    """`key` on the config or the first sub-config holding it (vision / backbone config)."""
    if getattr(config, key, None) is not None:
        return getattr(config, key)
    for name in ("vision_config", "backbone_config", "encoder"):
        sub = getattr(config, name, None)
        if sub is not None and not isinstance(sub, (dict, str)):
            found = _find(sub, key)
            if found is not None:
                return found
    return None


def meta_batch(model: nn.Module, recipe: Any) -> tuple[dict[str, torch.Tensor], str]:
    """A batch of meta tensors for `model` at the recipe's per-device batch size, and what the loss is."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    accepts = inspect.signature(core.forward).parameters
    config = core.config
    batch_size = recipe.training.batch_size
    size = _find(config, "image_size")
    if size is None or "pixel_values" not in accepts:
        raise ValueError("the model's config gives no image size")
    height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    batch: dict[str, torch.Tensor] = {
        "pixel_values": torch.empty(
            batch_size, _find(config, "num_channels") or 3, height, width, device="meta"
        )
    }
    if "input_ids" in accepts:
        tokens = getattr(recipe.data, "max_length", None) or TEXT_TOKENS
        ids = torch.zeros(batch_size, tokens, dtype=torch.long, device="meta")
        batch["input_ids"] = ids  # no attention mask: unpadded, and mask code asks `mask.all()` (no data)
        if "labels" in accepts:
            batch["labels"] = torch.zeros_like(ids)
    elif "labels" in accepts and getattr(config, "num_labels", None) and "return_loss" not in accepts:
        batch["labels"] = torch.zeros(batch_size, dtype=torch.long, device="meta")
    if "return_loss" in accepts:
        batch["return_loss"] = True  # type: ignore[assignment]
    try:  # a model that computes no loss of its own (ViTPose raises on labels): its output's mean instead
        with torch.no_grad():
            model(**batch)
    except NotImplementedError:
        batch = {k: v for k, v in batch.items() if k not in ("labels", "return_loss")}
    return batch, "the model's loss" if "labels" in batch or "return_loss" in batch else "mean of its output"


def meta_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The model's loss on `batch`, else the mean of its first output (a scalar to run backward from)."""
    output = model(**batch)
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    first = next(v for v in output.values() if torch.is_tensor(v))
    return first.float().mean()
