"""Reruns of `launch.py` into an output dir that holds a finished run, as a user types them.

The issue's sequence: a run; the same command with another `data.train`, `training.batch_size=1` and
`training.epochs=1` (must stop before loading the model, exit 2, changing nothing); the same command again
(already complete, nothing trained); then `training.resume=never` (trains afresh, the finished run is kept
in `previous-1/`). Also: loading the best model back prints no "missing keys" for BLIP's tied LM head,
and the weights it reloads are the saved best ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, SHAPES, tiny_recipe

RECIPE = """
from trainers.models.blip import TinyBlipSpec
from trainers.recipe import CaptionData, Evaluation, Model, Recipe, Reporting, Training

recipe = Recipe(
    name="rerun",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(train="{shapes}/train.json", val="{shapes}/val.json", images="{shapes}/images",
                     max_train_samples=16, max_val_samples=4),
    training=Training(epochs=2, batch_size=8, lr=1e-3, logging_steps=1),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=1, max_length=8, batch_size=4),
    reporting=Reporting(wandb=False, plots=False),
)
"""


def _load_launch():
    spec = importlib.util.spec_from_file_location("launch_cli_rerun", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAUNCH = _load_launch()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def launch_in_process(*args: str) -> Result:
    """`launch.main(args)` in this process (the CLI's entry point, without ~5 s of imports per call)."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:]
    library = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in library]
    root.handlers = []  # launch.main's basicConfig then logs into the capture
    for handler in library:
        handler.stream = err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = LAUNCH.main(list(args))
    finally:
        root.handlers = saved
        for handler, stream in zip(library, streams, strict=True):
            handler.stream = stream
    return Result(rc, out.getvalue(), err.getvalue())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rerun_with_other_settings_stops_then_same_is_complete_then_never_keeps_the_old_run(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    recipe = tmp_path / "rerun.py"
    recipe.write_text(textwrap.dedent(RECIPE).format(shapes=SHAPES))
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(list(json.loads((SHAPES / "train.json").read_text()).items())[-16:])))
    out = tmp_path / "x"
    base = [str(recipe), "--output-dir", str(out)]

    first = launch_in_process(*base)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "done: 4 steps" in first.stdout
    assert "missing keys" not in first.stderr  # the tied LM head, loaded back with the best model
    finished = _files(out)

    changed = launch_in_process(*base, f"data.train={other}", "training.batch_size=1", "training.epochs=1")
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "Traceback" not in changed.stderr and "done:" not in changed.stdout
    message = [line for line in changed.stderr.splitlines() if line.startswith("error: ")][-1]
    for fragment in (
        f'data.train: "{SHAPES}/train.json" -> "{other}"',
        "training.batch_size: 8 -> 1",
        "training.epochs: 2 -> 1",
        "checkpoint-4",
        "--output-dir",
        "training.resume=never",
        "training.resume=force",
    ):
        assert fragment in message, (fragment, message)
    assert "run plan:" not in changed.stderr  # logged once the model is built: it never was
    assert _files(out) == finished

    same = launch_in_process(*base)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "already complete" in same.stdout and "4 steps" in same.stdout and "done:" not in same.stdout
    assert "run plan:" not in same.stderr
    assert _files(out) == finished

    again = launch_in_process(*base, "training.resume=never")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done: 4 steps" in again.stdout
    assert f"moved to {out / 'previous-1'}" in again.stderr
    kept = _files(out / "previous-1")
    assert kept == finished  # the finished run, byte for byte
    assert json.loads((out / "training_summary.json").read_text())["global_steps"] == 4


def test_the_best_model_is_loaded_back_without_a_missing_keys_warning_and_equals_the_saved_weights(tmp_path):
    from trainers.recipe import EarlyStopping
    from trainers.run import complete_run, setup_run

    recipe = tiny_recipe(tmp_path / "run", epochs=2)
    # the highest eval loss is the first epoch's: the best model (checkpoint-4) is not the last state (step 8)
    recipe.early_stopping = EarlyStopping(metric="loss", mode="max", patience=5)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger("transformers").addHandler(handler)
    try:
        ctx = setup_run(recipe)
        summary = complete_run(ctx)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    warnings = [r.getMessage() for r in records]
    assert not [w for w in warnings if "missing keys" in w or "unexpected keys" in w], warnings

    run = tmp_path / "run"
    assert summary["best_checkpoint"].endswith("checkpoint-4")
    best_ckpt = load_file(str(run / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    last_ckpt = load_file(str(run / "checkpoints" / "checkpoint-8" / "model.safetensors"))
    best_dir = load_file(str(run / "best" / "model.safetensors"))
    live = ctx.trainer.model.state_dict()
    assert best_dir.keys() == best_ckpt.keys()
    for name, tensor in best_ckpt.items():
        assert torch.equal(live[name], tensor), name
        assert torch.equal(best_dir[name], tensor), name
    assert any(not torch.equal(last_ckpt[n], best_ckpt[n]) for n in best_ckpt)  # so the reload mattered
    # the tied head is the loaded embedding itself, not a stale copy
    model = ctx.trainer.model
    head = model.text_decoder.cls.predictions.decoder
    assert head.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
    assert torch.equal(head.weight, best_ckpt["text_decoder.bert.embeddings.word_embeddings.weight"])


def test_with_a_launcher_the_parent_decides_before_starting_any_process(tmp_path, monkeypatch):
    """`--launcher torchrun --nproc 2`: a refused rerun and a complete run end in the parent; nothing is exec'd."""
    from test_rerun_decisions import plant_run

    from trainers.recipe import load_recipe

    monkeypatch.chdir(ROOT)
    recipe = tmp_path / "rerun.py"
    recipe.write_text(textwrap.dedent(RECIPE).format(shapes=SHAPES))
    out = tmp_path / "x"
    launched = ["--launcher", "torchrun", "--nproc", "2", "--output-dir", str(out)]
    plant_run(
        out,
        load_recipe(recipe, [f"output_dir={out}", "launch.launcher=torchrun", "launch.nproc=2"]),
        steps=(4, 8),
        world_size=2,
    )
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"a launcher was started: {a}"))

    refused = launch_in_process(str(recipe), *launched, "training.lr=1e-4")
    assert refused.returncode == 2 and "training.lr: 0.001 -> 0.0001" in refused.stderr
    same = launch_in_process(str(recipe), *launched)
    assert same.returncode == 0 and "already complete" in same.stdout, same.stderr[-2000:]
    fewer = launch_in_process(str(recipe), "--output-dir", str(out))  # in-process: 1 process instead of 2
    assert fewer.returncode == 2 and "world size (processes): 2 -> 1" in fewer.stderr
