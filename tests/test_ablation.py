"""`launch.py --ablate KEY=V1,V2`: one fresh run per value in its own dir, one comparison table and plot; a
Slurm ablation is one job array; bad `--ablate` syntax is one paragraph and exit 2, before anything trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from launch import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/vit_lora.py"
SHORT = [
    "data.max_train_samples=16",
    "data.max_val_samples=8",
    "training.batch_size=8",
    "training.epochs=1",
    "reporting.plots=false",
]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_two_values_two_runs_and_one_comparison_and_an_earlier_run_is_never_reused_or_lost(tmp_path, capsys):
    out = tmp_path / "sweep"
    stale = out / "sweep-1"  # an earlier run with made-up results where the second variant goes
    stale.mkdir(parents=True)
    planted = json.dumps({"best_metric": {"name": "accuracy", "value": 9.0}})
    (stale / "training_summary.json").write_text(planted)
    args = [RECIPE, "--demo", "--quiet", "--ablate", "lora.r=4,8", *SHORT, f"output_dir={out}"]
    assert (
        main(args) == 2
    )  # found before the first variant trains: nothing trained, the earlier run untouched
    assert "sweep-1" in capsys.readouterr().err
    assert not (out / "sweep-0").exists() and (stale / "training_summary.json").read_text() == planted
    code = main([*args, "training.resume=never"])  # the earlier run is kept aside, the variant starts over
    assert (out / "sweep-1" / "previous-1" / "training_summary.json").read_text() == planted
    assert code == 0
    printed = capsys.readouterr().out
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["lora.r=4", "lora.r=8"]
    assert [r["run_dir"] for r in rows] == [str(out / "sweep-0"), str(out / "sweep-1")]
    # LoRA on q and v of 4 blocks of width 64: 8 x r x (64 + 64), plus the classifier (4 x 64 + 4) trained fully
    assert [r["trainable_params"] for r in rows] == [8 * 4 * 128 + 260, 8 * 8 * 128 + 260]
    for i, row in enumerate(rows):
        summary = json.loads((out / f"sweep-{i}" / "training_summary.json").read_text())
        assert summary["config"]["lora"]["r"] == (4, 8)[i] and summary["global_steps"] == 2
        assert row["best_metric"] == summary["best_metric"]["value"] != 9.0
        assert row["peak_memory_bytes"] > 0 and row["seconds_per_epoch"] > 0
    assert "| lora.r=4 | 4,356 of" in printed and "| lora.r=8 | 8,452 of" in printed
    assert (out / "ablation.md").read_text() in printed
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_slurm_ablation_is_one_job_array(tmp_path, capsys):
    out = tmp_path / "slurm"
    code = main(
        [
            RECIPE,
            "--demo",
            "--ablate",
            "training.lr=1e-3,5e-3",
            "--launcher",
            "slurm",
            "--dry-run",
            "--gpus-per-node",
            "0",
            f"output_dir={out}",
        ]
    )
    assert code == 0
    script = capsys.readouterr().out.split("sbatch script", 1)[1]
    assert "#SBATCH --array=0-1" in script
    for i, lr in enumerate(("1e-3", "5e-3")):
        line = next(x for x in script.splitlines() if x.strip().startswith(f"{i})"))
        assert f"training.lr={lr}" in line and f"sweep-{i}" in line


@pytest.mark.parametrize(
    "ablate, says",
    [
        ("lora.r", "has no '='"),
        ("lora.r=4", "one value compares nothing"),
        ("lora.r=4,,8", "an empty value"),
        ("lora.r=4,8,4", "4 given twice"),
        ("=4,8", "is not a dotted recipe key"),
        ("lora.rank=4,8", "Unknown override key 'lora.rank'"),
        ("lora.r=4,eight", "lora.r"),
    ],
)
def test_bad_ablate_is_one_paragraph_and_exit_2(ablate, says, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main([RECIPE, "--demo", "--ablate", ablate, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1 and not out.exists()  # nothing ran


def test_ablate_with_sweep_is_refused(tmp_path, capsys):
    assert (
        main(
            [
                RECIPE,
                "--demo",
                "--ablate",
                "lora.r=4,8",
                "--sweep",
                "training.lr=1e-3",
                f"output_dir={tmp_path / 'both'}",
            ]
        )
        == 2
    )
    assert "--ablate and --sweep both name variants" in capsys.readouterr().err


def test_comparison_of_a_finished_sweep_needs_its_plan(tmp_path, capsys):
    from trainers.analysis.ablation import main as compare

    assert compare([str(tmp_path)]) == 2
    assert "ablation_plan.json: not found" in capsys.readouterr().err
    shutil.rmtree(tmp_path)
