"""Chat from a `datasets` source: the shipped data/chat_shapes JSONL turned into a saved DatasetDict (a `messages`
column of {role, content} turns and a list of `Image`s per row) encodes the same tokens, label mask and pixels as
the JSONL files, gives the same plan baseline, trains a step; bad rows are named by split and row index."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from conftest import ROOT
from trainers.data.source_config import Columns, DatasetSource
from trainers.data_policy import DataError
from trainers.models.registry import get_family
from trainers.recipe import load_recipe
from trainers.tasks.chat.task import ChatTask

SHAPES = ROOT / "data" / "chat_shapes"
N = 16
COLUMNS = Columns(image="images", messages="messages")


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def rows(file: str, n: int, paths: bool = False) -> list[dict]:
    """The first `n` JSONL lines as rows: images as absolute file names (`paths`) or as PIL images."""
    from PIL import Image

    out = []
    for line in (SHAPES / file).read_text().splitlines()[:n]:
        record = json.loads(line)
        files = [str(SHAPES / "images" / f) for f in record["images"]]
        out.append(
            {"images": files if paths else [Image.open(f) for f in files], "messages": record["messages"]}
        )
    return out


def save(directory: Path, splits: dict[str, list[dict]], paths: bool = False) -> Path:
    features = (
        None
        if paths
        else datasets.Features(
            {
                "images": datasets.List(datasets.Image()),
                "messages": datasets.List(
                    {"role": datasets.Value("string"), "content": datasets.Value("string")}
                ),
            }
        )
    )
    datasets.disable_progress_bars()
    datasets.DatasetDict(
        {k: datasets.Dataset.from_list(v, features=features) for k, v in splits.items()}
    ).save_to_disk(str(directory))
    return directory


def recipe(overrides: tuple[str, ...] = ()):
    return load_recipe(
        str(ROOT / "recipes" / "qwen2_vl_lora.py"),
        [f"data.max_train_samples={N}", f"data.max_val_samples={N}", *overrides],
        demo=True,
    )


def sourced(path: Path, overrides: tuple[str, ...] = ()):
    r = recipe(overrides)
    r.data.train = DatasetSource(kind="disk", path=str(path), split="train", columns=COLUMNS)
    r.data.val = DatasetSource(kind="disk", path=str(path), split="validation", columns=COLUMNS)
    r.data.images = r.data.val_images = None
    r.validate()
    return r


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save(
        tmp_path_factory.mktemp("chat") / "shapes",
        {"train": rows("train.jsonl", N), "validation": rows("val.jsonl", N)},
    )


@pytest.fixture(scope="module")
def processor():
    return get_family("qwen2-vl").build_tiny()(None, seed=0)[1]


def same_items(a, b) -> None:
    assert len(a) == len(b) == N
    assert [(c.turns, c.answer) for c in a.samples] == [(c.turns, c.answer) for c in b.samples]
    for i in range(N):
        x, y = a[i], b[i]
        assert set(x) == set(y)
        for name in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"):
            assert torch.equal(x[name], y[name]), (i, name)


@pytest.mark.parametrize("paths", [False, True], ids=["image-features", "file-names"])
def test_a_saved_chat_set_encodes_as_the_jsonl_files(saved, tmp_path, processor, paths):
    if paths:
        splits = {"train": rows("train.jsonl", N, True), "validation": rows("val.jsonl", N, True)}
        saved = save(tmp_path / "shapes", splits, paths=True)
    files = ChatTask().build(recipe(), processor)
    built = ChatTask().build(sourced(saved), processor)
    same_items(built.train, files.train)
    same_items(built.val, files.val)
    for i in range(N):
        assert torch.equal(built.val[i]["prompt"]["input_ids"], files.val[i]["prompt"]["input_ids"])


def test_the_plan_baseline_reads_the_source_as_the_files(tmp_path):
    """Whole splits (600 / 120 conversations, images as file names): the most frequent answer "green" scores
    exact match 0.158 on val from either."""
    splits = {"train": rows("train.jsonl", 10**6, True), "validation": rows("val.jsonl", 10**6, True)}
    from_source = ChatTask().plan_baseline(sourced(save(tmp_path / "all", splits, paths=True)))
    from_files = ChatTask().plan_baseline(recipe())
    assert from_source is not None and from_files is not None
    assert from_source.metrics() == from_files.metrics()
    assert round(from_source.metrics()["baseline_exact_match"], 3) == 0.158


def test_a_sourced_chat_recipe_trains_a_step(saved, tmp_path):
    from trainers.run import complete_run, setup_run

    overrides = (
        f"output_dir={tmp_path / 'run'}",
        "training.epochs=1",
        "training.max_steps=1",
        "training.warmup_steps=0",
        "training.batch_size=4",
        "evaluation.max_new_tokens=1",
        "reporting.plots=false",
        "reporting.wandb=false",
    )
    ctx = setup_run(sourced(saved, overrides))
    before = {n: p.detach().clone() for n, p in ctx.trainer.model.named_parameters() if p.requires_grad}
    summary = complete_run(ctx)
    assert summary["global_steps"] == 1 and torch.isfinite(torch.tensor(summary["train_loss"]))
    moved = [
        n for n, p in ctx.trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])
    ]
    assert moved


BAD = [
    ([{"role": "user", "content": "<image>How many circles?"}], 1, "no assistant turn"),
    (
        [{"role": "user", "content": "<image><image>How many?"}, {"role": "assistant", "content": "two"}],
        1,
        "2 image placeholder(s) (<image> or image parts) but 1 image(s) in column 'images'",
    ),
    (
        [{"role": "human", "content": "<image>How many?"}, {"role": "assistant", "content": "two"}],
        1,
        "messages[0] has role 'human'",
    ),
]


@pytest.mark.parametrize(("messages", "images", "fragment"), BAD, ids=["no-answer", "image-count", "role"])
def test_a_bad_row_is_named_by_split_and_row(tmp_path, processor, messages, images, fragment):
    good = rows("train.jsonl", 3)
    bad = [*good, {"images": good[0]["images"][:images], "messages": messages}]
    path = save(tmp_path / "bad", {"train": bad, "validation": good})
    with pytest.raises(DataError) as error:
        ChatTask().build(sourced(path), processor)
    assert f"data.train row 3 ({path})" in str(error.value) and fragment in str(error.value)
    skipping = sourced(path, ("data.on_bad_sample=skip",))
    assert len(ChatTask().build(skipping, processor).train) == 3
