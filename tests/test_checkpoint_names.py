"""Checkpoints load back whole: every tensor of a checkpoint reaches the model on resume and at the end.

transformers 5 saves models under their checkpoint format's original names (ViT: `encoder.layer.N.attention.
attention.query`, DETR's ResNet backbone, BERT LayerNorms as `gamma`/`beta` when a hub checkpoint had them),
while the Trainer reloads a checkpoint (resume, best model at the end) with `model.load_state_dict(sd,
strict=False)`, which skips every name it does not know. Measured on transformers 5.24 before the fix: the
tiny ViT lost 32 of its 40 tensors that way, so `best/` kept the last epoch's encoder and a resumed run
restarted the encoder from its initial weights, without an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from trainers.checkpoints import save_under_model_names
from trainers.models.registry import get_family
from trainers.recipe.loading import load_recipe
from trainers.run import run_training

VIT_RECIPE = ROOT / "recipes" / "vit_lora.py"


@pytest.mark.parametrize("family", ["detr", "vit"])
def test_the_original_format_renames_vit_and_detr_tensors_so_checkpoints_keep_the_loaded_names(
    family, tmp_path
):
    """Every family's checkpoint holds each tensor under its loaded name (tests/contract/test_families.py);
    for these two the export, in transformers' original format, names them otherwise."""
    entry = get_family(family)
    model = entry.build_tiny()(None, **entry.tiny_task_kwargs)[0]
    with save_under_model_names(model):
        model.save_pretrained(tmp_path)
    saved = set(load_file(tmp_path / "model.safetensors"))
    model.save_pretrained(tmp_path / "export")
    assert set(load_file(tmp_path / "export" / "model.safetensors")) != saved


def _vit_full(out: Path, epochs: int):
    # best by the highest val loss: the first epoch, so the best model is not the last one; a constant LR lets
    # a finished run continue to more epochs (a linear schedule would change its curve)
    return load_recipe(
        VIT_RECIPE,
        [
            "lora=none",
            f"output_dir={out}",
            f"training.epochs={epochs}",
            "early_stopping.metric=eval_loss",
            "early_stopping.mode=max",
            "training.resume=auto",
            "training.lr_scheduler=constant",
        ],
        demo=True,
    )


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(directory).state_dict()


def _checkpoint(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"checkpoint-{step}"


@pytest.mark.slow
def test_full_vit_best_model_and_resume_use_every_checkpointed_tensor(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    summary = run_training(_vit_full(whole, epochs=3))
    steps = sorted(int(p.name.split("-")[1]) for p in (whole / "checkpoints").glob("checkpoint-*"))
    state = json.loads((_checkpoint(whole, steps[-1]) / "trainer_state.json").read_text())
    best_step = int(state["best_model_checkpoint"].rsplit("-", 1)[1])
    assert best_step < steps[-1], (best_step, steps)  # the test needs a best model that is not the last
    best, best_checkpoint, last = (
        _weights(whole / "best"),
        _weights(_checkpoint(whole, best_step)),
        _weights(_checkpoint(whole, steps[-1])),
    )
    encoder = [n for n in best if ".layers." in n]
    assert encoder and all(torch.equal(best[n], best_checkpoint[n]) for n in best)
    assert any(not torch.equal(best[n], last[n]) for n in encoder)
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best_step}")

    # 2 epochs, then the same run continued to 3: resumes from the epoch-2 checkpoint, ends where `whole` ended
    run_training(_vit_full(resumed, epochs=2))
    run_training(_vit_full(resumed, epochs=3))
    resumed_last = _weights(_checkpoint(resumed, steps[-1]))
    differing = [n for n in last if not torch.equal(last[n], resumed_last[n])]
    assert not differing, differing[:5]


def test_a_checkpoint_whose_tensors_reach_no_parameter_stops_instead_of_keeping_stale_weights(tmp_path):
    from types import SimpleNamespace

    from trainers.checkpoints import CheckpointError
    from trainers.trainer import RecipeTrainer

    entry = get_family("vit")
    model = entry.build_tiny()(None, **entry.tiny_task_kwargs)[0]
    model.save_pretrained(tmp_path)  # transformers' original format: names this model does not have
    result = model.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert result.unexpected_keys  # what the Trainer's reload gets from such a file
    with pytest.raises(CheckpointError, match=r"holds \d+ tensors the model has no parameter for"):
        RecipeTrainer._issue_warnings_after_load(SimpleNamespace(model=model), result)
