"""Documented commands that no other test runs, run as written (a few seconds each).

"Fine-tune on your data" commands on a clone without the user's files stop before any model is loaded, with the
data paragraph naming every path the command gave (so each override reaches the recipe's data section);
dry-runs print their plan; the VOC converter writes JSONL into the user's folder; the Slurm commands on a
machine without Slurm say so (exit 2), and their `--dry-run` renders the job the command asks for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

FINE_TUNE = {
    "blip_progressive": "recipes/blip_progressive.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images",
    "blip_lora": "recipes/blip_lora.py data.train=my_data/train.jsonl data.val=my_data/val.jsonl "
    "data.images=my_data/images",
    "vit_folders": "recipes/vit_lora.py data.train=my_data/train data.val=my_data/val",
    "vit_csv": "recipes/vit_lora.py data.train=my_data/train.csv data.val=my_data/val.csv data.images=my_data/images",
    "detr": "recipes/detr_lora.py data.train=my_data/train.json data.val=my_data/val.json data.images=my_data/images",
    "detr_full": "recipes/detr_lora.py data.train=my_data/train.json data.val=my_data/val.json "
    "data.images=my_data/images lora=none",
    "vitpose": "recipes/vitpose_lora.py data.train=my_data/person_keypoints_train.json "
    "data.val=my_data/person_keypoints_val.json data.images=my_data/images",
    "vitpose_oks": "recipes/vitpose_lora.py data.train=my_data/person_keypoints_train.json "
    "data.val=my_data/person_keypoints_val.json data.images=my_data/images evaluation.best_metric=oks_ap",
    "florence2": "recipes/florence2_lora.py data.train=my_data/train.jsonl data.val=my_data/val.jsonl "
    "data.images=my_data/train/JPEGImages data.val_images=my_data/val/JPEGImages",
    "clip": "recipes/clip_minilm.py data.train=my_data/train.json data.val=my_data/val.json data.images=my_data/images",
    "clip_small": "recipes/clip_minilm.py --config config/clip_small_data.yaml data.train=my_data/train.json "
    "data.val=my_data/val.json data.images=my_data/images",
}
CONVERTER = "trainers.tasks.prompted_generation.voc_to_jsonl"
TASKS = "OD,DENSE_REGION_CAPTION,CAPTION_TO_PHRASE_GROUNDING"
SLURM = (
    "recipes/blip_progressive.py --launcher slurm --nodes 2 --gpus-per-node 8 --partition gpu --time 12:00:00"
)
SWEEP = [
    "recipes/blip_progressive.py",
    "--launcher",
    "slurm",
    "--sweep",
    "training.lr=1e-4",
    "--sweep",
    "recipes/blip_lora.py training.lr=3e-5",
]


def clean_env(tmp_path: Path, without_slurm: bool = False) -> dict[str, str]:
    """No pretrained weights (an empty Hugging Face home), no launcher variables, W&B off."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "HF_HUB_CACHE")
    }
    env.update(HF_HOME=str(tmp_path / "hf"), WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if without_slurm:
        env["PATH"] = os.pathsep.join(
            d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "sbatch").exists()
        )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("name", sorted(FINE_TUNE))
def test_fine_tune_on_your_data_reaches_the_data_check(name, tmp_path):
    command = FINE_TUNE[name].split()
    result = run(["launch.py", *command], clean_env(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [message] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "Data not found" in message and "--demo" in message
    given = [arg.split("=", 1) for arg in command if arg.startswith("data.")]
    for key, path in given:  # every path of the command, under its own key
        assert f"{key} '{path}'" in message, (key, message)


def test_voc_converter_writes_jsonl_into_your_own_folder(tmp_path):
    """The converter commands of docs/models/florence2.md, on a copy of two shipped LabelImg files."""
    for split, names in (("train", ("Annotations", "JPEGImages")), ("val", ("Annotations", "JPEGImages"))):
        source = ROOT / "data" / "fabric" / split
        for xml in sorted((source / "Annotations").glob("*.xml"))[:2]:
            for folder, file in zip(names, (xml, source / "JPEGImages" / f"{xml.stem}.jpg"), strict=True):
                (tmp_path / "my_data" / split / folder).mkdir(parents=True, exist_ok=True)
                shutil.copy(file, tmp_path / "my_data" / split / folder / file.name)
    shipped = {p: p.stat().st_mtime_ns for p in (ROOT / "data" / "fabric").rglob("*")}
    env = clean_env(tmp_path)
    train = run(
        ["-m", CONVERTER, "--voc", "my_data/train/Annotations", "--images", "my_data/train/JPEGImages",
         "--out", "my_data/train.jsonl", "--tasks", TASKS, "--flip"],
        env,
        cwd=tmp_path,
    )  # fmt: skip
    val = run(
        ["-m", CONVERTER, "--voc", "my_data/val/Annotations", "--images", "my_data/val/JPEGImages",
         "--out", "my_data/val.jsonl", "--tasks", TASKS],
        env,
        cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0 and val.returncode == 0, train.stderr[-3000:] + val.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "my_data" / "train.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 3  # 2 images and their flipped copies, 3 tasks each
    assert sum(line["image"].startswith("flipped_") for line in lines) == 6
    assert len((tmp_path / "my_data" / "val.jsonl").read_text().splitlines()) == 2 * 3
    assert len(list((tmp_path / "my_data" / "train" / "JPEGImages").glob("flipped_*"))) == 2
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "data" / "fabric").rglob("*")} == shipped


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "recipes/detr_lora.py data.train=data/tiny_boxes/train.json data.val=data/tiny_boxes/val.json "
            "data.images=data/tiny_boxes/images --dry-run",
            "facebook/detr-resnet-50",
        ),
        ("recipes/vitpose_lora.py --dry-run", "usyd-community/vitpose-base-simple"),
        ("recipes/florence2_omniparser_hybrid.py --dry-run", "florence-community/Florence-2-base"),
        ("recipes/clip_minilm.py encoder_configs.text.freeze_layers=2 --dry-run", "109,249,537"),
    ],
    ids=["detr", "vitpose", "florence2-hybrid", "clip-freeze-layers-2"],
)
def test_dry_runs_of_the_real_models_print_the_plan(command, expected, tmp_path):
    result = run(["launch.py", *command.split()], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout and "architecture only" in result.stdout


@pytest.mark.parametrize(
    ("command", "stand_in"),
    [
        ("recipes/vit_lora.py --dry-run", "placeholder of 2 classes"),
        ("recipes/detr_lora.py --dry-run", "placeholder of 2 categories"),
    ],
    ids=["vit", "detr"],
)
def test_dry_runs_without_the_data_plan_with_a_stated_label_set(command, stand_in, tmp_path):
    """The commands the recipes' docstrings give, on a clone without the user's data: the plan, the data
    warning, the stand-in label set and which counts depend on it; exit 0."""
    result = run(["launch.py", *command.split()], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "WARNING: data not found" in out and "architecture only" in out, out[-3000:]
    assert stand_in in out and "Counts that depend on the label set: the head's" in out, out[-3000:]
    assert "trainable now:" in out and "Traceback" not in result.stderr


def test_florence2_sizes_prints_the_documented_table(tmp_path):
    result = run(["-m", "trainers.models.florence2_sizes"], clean_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (ROOT / "docs" / "models" / "florence2.md").read_text()
    for figure in ("2,779,848", "59,132,672", "770,173,952"):  # its rows, as the page states them
        assert figure in result.stdout and figure in page


def test_slurm_commands_without_slurm_say_so(tmp_path):
    env = clean_env(tmp_path, without_slurm=True)
    for args in (["launch.py", *SLURM.split()], ["launch.py", *SWEEP]):
        result = run(args, env)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "`sbatch` is not on PATH" in result.stderr


def test_slurm_dry_run_renders_the_job_the_command_asks_for(tmp_path):
    result = run(["launch.py", *SLURM.split(), "--dry-run"], clean_env(tmp_path, without_slurm=True))
    assert result.returncode == 0, result.stderr[-3000:]
    for header in ("--nodes=2", "--gpus-per-node=8", "--partition=gpu", "--time=12:00:00"):
        assert f"#SBATCH {header}" in result.stdout
    sweep = run(["launch.py", *SWEEP, "--dry-run"], clean_env(tmp_path, without_slurm=True))
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert re.search(r"#SBATCH --array=0-1\b", sweep.stdout)


def test_make_targets_run_what_the_readme_says():
    """`make setup`, `make demo`, `make test` as `make -n` prints them (running them is the whole install and
    suite): setup runs the venv script, demo the BLIP demo, test ruff and pytest."""
    printed = {
        target: subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for target in ("setup", "demo", "test")
    }
    assert "scripts/setup_venv.sh" in printed["setup"]
    assert "launch.py recipes/blip_progressive.py --demo training.resume=overwrite" in printed["demo"]
    assert "ruff check ." in printed["test"] and "ruff format --check ." in printed["test"]
    assert "-m pytest" in printed["test"]
