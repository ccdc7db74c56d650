"""Files a user keeps are replaced whole or not at all: predictions, plots, ablation reports (the VOC converter's
own case is in tests/tasks/prompted_generation/test_florence_convert.py)."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from trainers import atomic_files
from trainers.atomic_files import WriteError, atomic_path, write_failure
from trainers.tasks.interface import PlainImagePrediction


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and _files(tmp_path) == ["report.md"]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and _files(tmp_path) == ["report.md"]


def test_torch_zip_writer_full_disk_reads_as_a_full_disk(tmp_path):
    zip_error = RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/3: file write failed"
    )
    message = str(write_failure(zip_error, tmp_path / "best" / "model.pt", "rerun the same command"))
    assert "the disk is full" in message and "model.pt" in message and "rerun the same command" in message
    assert atomic_files.is_write_failure(zip_error) and not atomic_files.is_write_failure(RuntimeError("nan"))


def _disk_fills(monkeypatch):
    """matplotlib's savefig writes part of the PNG, then the disk is full."""
    from matplotlib.figure import Figure

    def savefig(self, path, **_):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_a_plot_cut_short_by_a_full_disk_leaves_no_truncated_png(tmp_path, monkeypatch):
    from trainers.reporting.plots import plot_train_loss

    png = tmp_path / "train_loss.png"
    assert plot_train_loss([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], png) == png
    whole = png.read_bytes()
    _disk_fills(monkeypatch)
    with pytest.raises(OSError):
        plot_train_loss([{"step": 1, "loss": 2.0}], png)
    assert png.read_bytes() == whole and _files(tmp_path) == ["train_loss.png"]


class _StubTask(PlainImagePrediction):
    """A task that predicts with the given function and draws nothing (its `predict_files` is the default's)."""

    name = "stub"

    def __init__(self, predict_images) -> None:
        self.predict_images = predict_images

    def draw(self, image, prediction):
        return image


def test_predict_stopped_half_way_keeps_the_previous_predictions(tmp_path, monkeypatch):
    from trainers import predict

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / f"{i}.png")
    calls = []

    def predict_images(model, processor, pictures, options):
        calls.append(len(pictures))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second batch
        return [{"caption": "red"} for _ in pictures]

    task = _StubTask(predict_images)
    monkeypatch.setattr(
        predict, "load_run", lambda run_dir, *a, **k: SimpleNamespace(task=task, model=None, processor=None)
    )
    out = tmp_path / "preds.jsonl"
    assert len(predict.predict(tmp_path, images, out, batch_size=4)) == 4
    whole = out.read_text()
    with pytest.raises(KeyboardInterrupt):
        predict.predict(tmp_path, images, out, batch_size=2)
    assert out.read_text() == whole and not list(tmp_path.glob(".preds*"))


def test_predict_out_on_a_full_disk_is_one_paragraph(tmp_path, monkeypatch, capsys):
    from trainers import predict

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    task = _StubTask(lambda m, p, pictures, o: [{"caption": "x"} for _ in pictures])
    monkeypatch.setattr(
        predict, "load_run", lambda run_dir, *a, **k: SimpleNamespace(task=task, model=None, processor=None)
    )

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    assert predict.main([str(tmp_path), "--images", str(images), "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Writing ") and "p.jsonl" in err and "the disk is full" in err
    assert "Traceback" not in err and not (tmp_path / "p.jsonl").exists()


def test_ablation_reports_are_replaced_whole(tmp_path, monkeypatch):
    from trainers.analysis import ablation

    (tmp_path / ablation.PLAN).write_text(
        json.dumps({"recipe": "r.py", "key": "k", "values": [], "dirs": []})
    )
    paths = ablation.write_comparison(tmp_path)
    before = {name: p.read_bytes() for name, p in paths.items()}
    _disk_fills(monkeypatch)
    with pytest.raises(OSError):
        ablation.write_comparison(tmp_path)
    assert {name: p.read_bytes() for name, p in paths.items()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_directory_as_target_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(WriteError, match="is a directory; give a file name"), atomic_path(tmp_path):
        pass
