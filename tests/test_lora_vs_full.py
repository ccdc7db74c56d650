"""The LoRA-vs-full report: read two run directories, write Markdown and JSON, add the real-size row of
ViT-B/16 counted on the meta device; the peak-memory helper it reads."""

from __future__ import annotations

import gc
import json
import mmap
import re
from pathlib import Path

import pytest
from torch import nn

from trainers.analysis.lora_vs_full import lora_param_count, main, read_run
from trainers.reporting.memory import peak_memory, reset_peak_memory

VIT_BASE = "google/vit-base-patch16-224-in21k"


def fake_run(root: Path, kind: str) -> Path:
    """A run directory shaped like what trainers/run.py writes (summary, best/, peak memory)."""
    best = root / "best"
    best.mkdir(parents=True)
    lora = kind == "lora"
    (best / ("adapter_model.safetensors" if lora else "model.safetensors")).write_bytes(
        b"w" * (2_000 if lora else 50_000)
    )
    (best / ("adapter_config.json" if lora else "config.json")).write_text("{}")
    (best / "preprocessor_config.json").write_text("{}")  # not weights: not counted
    summary = {
        "recipe": f"vit_{kind}",
        "params": {
            "total": 12_500 if lora else 12_000,
            "trainable_at_start": 500 if lora else 12_000,
            "trainable_at_end": 500 if lora else 12_000,
        },
        "best_metric": {"name": "accuracy", "value": 0.9 if lora else 0.95},
        "final_metrics": {"epoch": 3, "accuracy": 0.85 if lora else 0.93},
        "best_metrics": {"epoch": 2, "accuracy": 0.9 if lora else 0.95},
        "seconds_per_epoch": [1.0, 2.0, 3.0] if lora else [4.0, 5.0],
        "best_model_dir": str(best),
    }
    if lora:
        summary["lora"] = {"trainable_params_peft": 500, "adapter_bytes": 2_100}
        (root / "peak_memory.json").write_text(
            json.dumps(
                {"device": "cpu", "bytes": 300_000_000, "measure": "peak RSS (VmHWM)", "since": "reset"}
            )
        )
    else:
        summary["peak_memory"] = {
            "device": "cuda",
            "bytes": 800_000_000,
            "measure": "torch.cuda.max_memory_allocated",
        }
    (root / "training_summary.json").write_text(json.dumps(summary))
    return root


def test_reads_run_directories(tmp_path):
    lora, full = read_run(fake_run(tmp_path / "a", "lora")), read_run(fake_run(tmp_path / "b", "full"))
    assert (lora.kind, lora.trainable_params, lora.total_params, lora.checkpoint_bytes) == (
        "lora",
        500,
        12_500,
        2_000,
    )
    assert (full.kind, full.trainable_params, full.checkpoint_bytes) == ("full", 12_000, 50_000)
    assert lora.trainable_ratio == 0.04 and full.trainable_ratio == 1.0
    assert (lora.metric, lora.final_metric, lora.best_metric, lora.seconds_per_epoch) == (
        "accuracy",
        0.85,
        0.9,
        2.0,
    )
    assert lora.peak_memory_bytes == 300_000_000 and lora.peak_memory_measure == "cpu: peak RSS (VmHWM)"
    assert full.peak_memory_bytes == 800_000_000 and full.seconds_per_epoch == 4.5


def test_command_writes_markdown_and_json_with_the_real_size_row(tmp_path, capsys):
    lora, full = fake_run(tmp_path / "lora", "lora"), fake_run(tmp_path / "full", "full")
    code = main(
        [
            "--lora",
            str(lora),
            "--full",
            str(full),
            "--out",
            str(tmp_path / "report"),
            "--real-size",
            VIT_BASE,
            "--num-labels",
            "101",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "lora_vs_full.json").read_text())
    assert [r["kind"] for r in report["runs"]] == ["lora", "full"]
    real = report["real_size"][0]
    # ViT-B/16: 85,798,656 backbone + 768 x 101 + 101 head; LoRA r16 on 12 x (q, v): 12 x 2 x 16 x (768 + 768)
    assert real["total_params"] == 85_798_656 + 77_669
    assert real["lora_trainable_params"] == real["peft_trainable_params"] == 589_824 + 77_669 == 667_493
    assert real["full_bytes"] == 343_505_300 and real["adapter_bytes"] == 2_669_972
    md = (tmp_path / "report" / "lora_vs_full.md").read_text()
    assert "| trainable params | 500 (4.00% of 12,500) | 12,000 (100.00% of 12,000) |" in md
    assert "| checkpoint | 0.002 MB (adapter) | 0.050 MB (full model) |" in md
    assert "| accuracy final | 0.8500 | 0.9300 |" in md and "| accuracy best | 0.9000 | 0.9500 |" in md
    assert "| time per epoch | 2.00 s | 4.50 s |" in md
    assert (
        "| google/vit-base-patch16-224-in21k | 101 | r=16 on q_proj, v_proj + classifier | 667,493 (0.78%)"
        in md
    )
    assert "| 2.7 MB | 343.5 MB (float32) |" in md


def test_command_stops_with_one_paragraph_on_a_missing_run_or_unknown_architecture(tmp_path, capsys):
    full = fake_run(tmp_path / "full", "full")
    assert main(["--lora", str(tmp_path / "nowhere"), "--full", str(full), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"error: {tmp_path / 'nowhere' / 'training_summary.json'}: not found")
        and "\n" not in err
    )
    args = [
        "--lora",
        str(full),
        "--full",
        str(full),
        "--out",
        str(tmp_path / "r"),
        "--real-size",
        "someone/vit-x",
    ]
    assert main(args) == 2
    assert "--real-size someone/vit-x: family 'vit' does not know" in capsys.readouterr().err


def test_closed_form_lora_count_on_nested_linears():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.v_proj, self.o_proj = nn.Linear(8, 4), nn.Linear(8, 6), nn.Linear(4, 8)

    model = nn.Module()
    model.blocks = nn.ModuleList([Block(), Block()])
    model.head = nn.Linear(8, 3)
    assert lora_param_count(model, ["q_proj", "v_proj"], r=2) == 2 * (2 * (8 + 4) + 2 * (8 + 6))
    assert lora_param_count(model, ["q_proj"], r=2, modules_to_save=["head"]) == 2 * 2 * 12 + 8 * 3 + 3
    model.head = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="only Linear"):
        lora_param_count(model, ["head"], r=2)


def _resident_bytes() -> int:
    return (
        int(re.search(r"^VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)[1]) * 1024
    )


def test_peak_memory_resets_and_sees_an_allocation():
    gc.collect()
    reset_peak_memory()
    # Fresh pages from an anonymous mapping: inside the whole suite, a malloc'd block reused memory freed
    # earlier that was still resident, and neither the resident size nor the peak moved (seen in a full run).
    resident = _resident_bytes()
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    for offset in range(0, len(block), mmap.PAGESIZE):  # touch every page: resident
        block[offset] = 1
    during = peak_memory()
    block.close()
    assert during.device == "cpu" and during.since == "reset"
    assert during.bytes - resident >= 60 * 1024 * 1024
    reset_peak_memory()
    assert peak_memory().bytes < during.bytes - 32 * 1024 * 1024


def test_the_report_runs_the_tiny_vit_recipe_with_and_without_lora(tmp_path, monkeypatch, capsys):
    """`python -m trainers.analysis.lora_vs_full --recipe recipes/vit_lora.py --demo`: both runs, one table."""
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "report"
    assert (
        main(
            [
                "--recipe",
                "recipes/vit_lora.py",
                "--demo",
                "--out",
                str(out),
                "training.epochs=1",
                "reporting.plots=false",
            ]
        )
        == 0
    )
    runs = {r["kind"]: r for r in json.loads((out / "lora_vs_full.json").read_text())["runs"]}
    lora, full = runs["lora"], runs["full"]
    assert full["trainable_params"] == full["total_params"] > lora["trainable_params"] > 0
    assert 0 < lora["checkpoint_bytes"] < full["checkpoint_bytes"] / 5
    assert (out / "lora" / "best" / "adapter_model.safetensors").is_file()
    assert (out / "full" / "best" / "model.safetensors").is_file()
    for run in (lora, full):
        assert run["metric"] == "accuracy" and 0 <= run["final_metric"] <= 1 and run["seconds_per_epoch"] > 0
        assert run["peak_memory_bytes"] > 0
    assert "| accuracy best |" in (out / "lora_vs_full.md").read_text()
