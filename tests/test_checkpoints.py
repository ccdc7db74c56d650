"""Checkpoint manifests, the choice of resume checkpoint, rotation of complete checkpoints only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from trainers.checkpoints import (
    MANIFEST,
    checkpoint_problem,
    finalize_checkpoint,
    find_resume_checkpoint,
    recipe_hash,
    remove_partial_checkpoints,
    rotate_complete_checkpoints,
)


def _complete(run: Path, step: int, rhash: str | None = "h") -> Path:
    tmp = run / f"tmp-checkpoint-{step}"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"w" * step)
    (tmp / "trainer_state.json").write_text("{}")
    final = run / f"checkpoint-{step}"
    finalize_checkpoint(tmp, final, step, step / 4, rhash)
    return final


def test_resume_takes_the_newest_complete_checkpoint_and_says_why_others_were_skipped(tmp_path, caplog):
    run = tmp_path / "checkpoints"
    _complete(run, 4)
    _complete(run, 8)
    torn = _complete(run, 12)
    (torn / "model.safetensors").write_bytes(b"short")  # truncated after the manifest was written
    (run / "checkpoint-16").mkdir()  # no manifest: a save that never finished (or a pre-manifest copy)
    (run / "checkpoint-16" / "model.safetensors").write_bytes(b"x")
    (run / "tmp-checkpoint-20").mkdir()
    with caplog.at_level(logging.WARNING):
        choice = find_resume_checkpoint(run, "h")
    assert choice.checkpoint == str(run / "checkpoint-8")
    assert [Path(p).name for p, _ in choice.skipped] == ["checkpoint-16", "checkpoint-12"]
    assert "no checkpoint.json" in caplog.text and "has 5 bytes, the manifest says 12" in caplog.text
    assert remove_partial_checkpoints(run) == ["tmp-checkpoint-20"]
    manifest = json.loads((run / "checkpoint-8" / MANIFEST).read_text())
    assert manifest["step"] == 8 and manifest["epoch"] == 2 and manifest["files"]["model.safetensors"] == 8


def test_a_checkpoint_of_another_recipe_is_named_when_chosen(tmp_path, caplog):
    """Choosing a checkpoint only warns; whether a run may continue it is `trainers.rerun`'s decision."""
    run = tmp_path / "checkpoints"
    _complete(run, 4, rhash="old")
    with caplog.at_level(logging.WARNING):
        assert find_resume_checkpoint(run, "new").checkpoint.endswith("checkpoint-4")
    assert "different recipe" in caplog.text


def test_recipe_hash_ignores_what_may_change_between_a_run_and_its_resume():
    base = {
        "name": "r",
        "training": {"lr": 1e-3, "epochs": 3, "resume": "auto", "eval_batch_size": None},
        "output_dir": "a",
        "launch": {"nproc": 1, "zero": None},
        "reporting": {"wandb": True},
    }
    same = {
        "name": "r",
        "training": {"lr": 1e-3, "epochs": 9, "resume": "never", "eval_batch_size": None},
        "output_dir": "b",
        "launch": {"nproc": 2, "zero": None},
        "reporting": {"wandb": False},
    }
    others = [
        {**base, "training": {**base["training"], "lr": 2e-3}},
        {**base, "training": {**base["training"], "eval_batch_size": 4}},
        {**base, "launch": {**base["launch"], "zero": 3}},
    ]
    assert recipe_hash(base) == recipe_hash(same)
    assert all(recipe_hash(o) != recipe_hash(base) for o in others)


def test_the_manifest_records_the_world_size(tmp_path):
    run = tmp_path / "checkpoints"
    tmp = run / "tmp-checkpoint-3"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"w")
    finalize_checkpoint(tmp, run / "checkpoint-3", 3, 1.0, "h", world_size=4)
    assert json.loads((run / "checkpoint-3" / MANIFEST).read_text())["world_size"] == 4


def test_rotation_keeps_newest_and_best_and_never_counts_incomplete_ones(tmp_path):
    run = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        _complete(run, step)
    (run / "checkpoint-999").mkdir()  # incomplete and numbered highest: must not pass for "the newest"
    rotate_complete_checkpoints(run, 2, best=str(run / "checkpoint-4"))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-4", "checkpoint-8", "checkpoint-999"]
    assert checkpoint_problem(run / "checkpoint-8") is None


def test_only_safe_loaders_in_our_code():
    """Weights are safetensors; any torch.load passes weights_only=True; nothing unpickles."""
    import re

    from conftest import ROOT

    sources = [ROOT / "launch.py", *sorted((ROOT / "trainers").rglob("*.py"))]
    offending = []
    for path in sources:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            if "weights_only=True" not in match.group(1):
                offending.append(f"{path.name}: {match.group(0)}")
        offending += [f"{path.name}: {m}" for m in re.findall(r"\b(?:pickle|dill|joblib)\.loads?\(", text)]
    assert not offending, offending
