"""The tiny Florence-2's pre-trained vision tower: its DaViT trained to map generated fabric images to their
per-cell defect classes, shipped as `data/fabric/tiny_vision_tower.safetensors`.

Why: from random init the tiny model's language side never learns to read the image in a CPU-sized run (the
training loss with the batch's images shuffled equals the loss with the right ones to 1e-5 after 1500 steps,
and every val image gets the same generation: the decoder settles on the box prior first). The real
Florence-2 starts from a pre-trained DaViT; this gives the tiny one the same kind of start. The tower learns on
its own task (a 1x1 conv head over its last feature map predicts background / wrinkle / drop / broken for each
of the 8 x 8 grid cells) from freshly generated images, never the shipped train or val images:

    python scripts/pretrain_florence_tiny_tower.py        # rewrites data/fabric/tiny_vision_tower.safetensors

The model side (the file's path, loading it into the tower) is `trainers.models.florence2`.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as `python scripts/...`: the project's root is not on the path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.models.florence2 import (  # noqa: E402
    TINY_TOWER_FILE,
    TinyFlorence2Spec,
    build_tiny_florence2,
    tower_path,
)
from trainers.tasks.prompted_generation.fabric import CLASSES, GRID, Mark, render  # noqa: E402

IMAGE_SIZE = 64


@dataclass(frozen=True)
class TowerTraining:
    """The pre-training run: images are generated from `seed` (train) and `seed + 1` (held out)."""

    images: int = 300
    held_out: int = 100
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 1000


def cell_map(marks: Sequence[Mark]) -> np.ndarray:
    """The 8 x 8 grid of class indices (0 background, 1 + CLASSES.index otherwise)."""
    cells = np.zeros((GRID, GRID), dtype=np.int64)
    for mark in marks:
        x1, y1, x2, y2 = mark.cells
        cells[y1:y2, x1:x2] = CLASSES.index(mark.name) + 1
    return cells


def generated_set(processor: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` generated fabric images through the processor, and their cell maps."""
    rng = random.Random(f"tower-{seed}")
    images, maps = [], []
    for _ in range(n):
        image, marks = render(rng, IMAGE_SIZE)
        images.append(image)
        maps.append(cell_map(marks))
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return pixels, torch.from_numpy(np.stack(maps))


def cell_logits(tower: torch.nn.Module, head: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    features = tower(pixels).last_hidden_state  # (batch, channels, h, w)
    return F.interpolate(head(features), size=(GRID, GRID), mode="bilinear")


def foreground_accuracy(
    tower: torch.nn.Module, head: torch.nn.Module, pixels: torch.Tensor, maps: torch.Tensor
) -> float:
    """The share of marked cells whose class is predicted right (background is 85% of the cells, so the plain
    cell accuracy would flatter a tower that sees nothing)."""
    with torch.no_grad():
        predicted = cell_logits(tower, head, pixels).argmax(1)
    marked = maps > 0
    return float((predicted[marked] == maps[marked]).float().mean())


def pretrain_tower(
    training: TowerTraining = TowerTraining(),
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the tiny model's DaViT (random init, seed 0) on cell maps; its state dict and held-out accuracy."""
    spec = TinyFlorence2Spec(image_size=IMAGE_SIZE, vision_weights=None)
    model, processor = build_tiny_florence2(spec)
    tower = model.model.vision_tower
    pixels, maps = generated_set(processor, training.images, training.seed)
    held_pixels, held_maps = generated_set(processor, training.held_out, training.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        head = torch.nn.Conv2d(spec.vision_dims[-1], len(CLASSES) + 1, kernel_size=1)
        optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=training.lr)
        before = foreground_accuracy(tower, head, held_pixels, held_maps)
        tower.train()
        for _ in range(training.steps):
            batch = torch.randint(0, training.images, (training.batch_size,))
            loss = F.cross_entropy(cell_logits(tower, head, pixels[batch]), maps[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    tower.eval()
    report = {
        "held_out_foreground_accuracy_before": before,
        "held_out_foreground_accuracy": foreground_accuracy(tower, head, held_pixels, held_maps),
        "final_loss": loss.item(),
    }
    return {name: value.detach().clone().contiguous() for name, value in tower.state_dict().items()}, report


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, float]:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=tower_path(TINY_TOWER_FILE))
    parser.add_argument("--steps", type=int, default=TowerTraining.steps)
    args = parser.parse_args(argv)
    weights, report = pretrain_tower(TowerTraining(steps=args.steps))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.out), metadata={k: f"{v:.4f}" for k, v in report.items()})
    out(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB): marked cells classified right on "
        f"{TowerTraining.held_out} held-out images {report['held_out_foreground_accuracy_before']:.3f} -> "
        f"{report['held_out_foreground_accuracy']:.3f}"
    )
    return report


if __name__ == "__main__":
    main()
