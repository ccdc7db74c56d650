"""Shared fixtures: the tiny BLIP, the shipped shapes captions, a small recipe for fast runs."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "data" / "shapes"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
# The caption baselines kept between processes start empty for each run of the suite (set before xdist starts
# its workers, so both share it): no test reads a baseline an older checkout computed.
os.environ.setdefault("VLM_FINETUNE_CACHE", tempfile.mkdtemp(prefix="vlm-finetune-cache-"))
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in 2 pytest-xdist workers: each computes on one thread (2 workers x 2 OpenMP
    # threads on 2 cores made tiny-model steps many times slower; see trainers.run.configure_cpu_threads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The suites that read the shared distributed jobs (tests/distributed/jobs.py) run in one xdist worker, so the
# jobs run once; every other module stays whole in one worker, so its module fixtures run once too.
SHARED_JOB_MODULES = {"test_rank_invariance.py", "test_ragged_captions.py", "test_uneven_eval.py"}


# The longest modules (measured, 2 cores) start first, so that no worker is left with one of them at the end.
LONGEST_FIRST = (
    "test_demo_end_to_end.py",
    "test_rank_invariance.py",
    "test_ragged_captions.py",
    "test_uneven_eval.py",
    "test_slurm_cluster.py",
    "test_kill_resume.py",
    "test_launchers_end_to_end.py",
    "test_lora_demo.py",
    "test_resume.py",
    "test_cli.py",
)


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: modules stay contiguous


def pytest_xdist_make_scheduler(config, log):
    """Schedule whole modules (the shared-job suites as one) on the workers."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "shared_jobs" if Path(module).name in SHARED_JOB_MODULES else module

    config.option.loadscopereorder = False  # keep LONGEST_FIRST (xdist would sort modules by test count)
    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def shapes_dir() -> Path:
    assert (SHAPES / "train.json").is_file(), "the shipped sample set data/shapes is missing"
    return SHAPES


def tiny_recipe(output_dir: Path, **training):
    """A fast captioning recipe on the shipped shapes data (few images, tiny model)."""
    from trainers.models.blip import TinyBlipSpec
    from trainers.recipe import CaptionData, Evaluation, Model, Recipe, Reporting, Training

    settings = dict(
        epochs=2, batch_size=8, lr=1e-3, warmup_steps=0, weight_decay=0.01, logging_steps=1, resume="never"
    )
    settings.update(training)
    return Recipe(
        name="tiny",
        model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
        data=CaptionData(
            train=str(SHAPES / "train.json"),
            val=str(SHAPES / "val.json"),
            images=str(SHAPES / "images"),
            max_train_samples=32,
            max_val_samples=8,
        ),
        training=Training(**settings),
        evaluation=Evaluation(metrics=("rouge_l",), num_beams=2, max_length=12, batch_size=8),
        reporting=Reporting(wandb=False, plots=False),
        output_dir=str(output_dir),
    )


@pytest.fixture(scope="session")
def shared_jobs(tmp_path_factory):
    """The distributed suites' runs in three launches side by side (tests/distributed/jobs.py)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    import jobs

    return jobs.run_shared_jobs(tmp_path_factory.mktemp("shared_jobs"))
