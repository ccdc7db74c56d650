"""A validation set that does not divide by ranks x eval batch: 7 images on 2 ranks with eval batch 2, under
DDP and ZeRO-3 (where generation is synchronised across ranks, so the shards are padded to equal lengths).

Rank 1's shard (1, 3, 5) is padded with a repeat of 5; the repeat must not reach the scorer twice and no image
may be missing: every evaluation scores each of the 7 images exactly once, on rank 0, and the captions and
METEOR / ROUGE-L / CIDEr-D (and their mean) are those of one process, bit for bit, on both ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_rank_invariance import (
    CAPTION_SCORES,
    GLOBAL_BATCH,
    SAMPLES,
    WORKER,
    WORLD,
    facts,
    free_port,
    run_job,
    same_length_captions,
)

from conftest import SHAPES

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(1200)]

VAL, EVAL_BATCH, EPOCHS = 7, 2, 2
MODES = ("ddp", "zero3")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("uneven")
    val = root / "val7.json"
    val.write_text(json.dumps(dict(list(json.loads((SHAPES / "val.json").read_text()).items())[:VAL])))
    train = same_length_captions(SHAPES / "train.json", root / "train.json", SAMPLES)
    return {"root": root, "train": Path(train), "val": val}


def args(out: Path, data: dict[str, Path], modes: str) -> list[str]:
    return [str(WORKER), "--out", str(out), "--train-json", str(data["train"]), "--val-json", str(data["val"]),
            "--modes", modes, "--global-batch", str(GLOBAL_BATCH), "--epochs", str(EPOCHS), "--patience", "10",
            "--eval-batch", str(EVAL_BATCH)]


@pytest.fixture(scope="module")
def single(data) -> dict:
    out = data["root"] / "single"
    run_job([sys.executable, *args(out, data, "ddp")], out)
    return facts(out, "ddp", 1)[0]


@pytest.fixture(scope="module")
def two_ranks(data) -> Path:
    out = data["root"] / "two_ranks"
    run_job([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
             f"--master_port={free_port()}", *args(out, data, ",".join(MODES))], out)
    return out


def test_one_process_scores_each_image_once(single):
    assert single["scored_indices"] == [list(range(VAL))] * EPOCHS
    assert sorted(map(int, single["predictions"])) == list(range(VAL))


@pytest.mark.parametrize("mode", MODES)
def test_every_image_is_scored_exactly_once_per_evaluation(two_ranks, mode):
    main, other = facts(two_ranks, mode, WORLD)
    assert len(main["eval"]) == EPOCHS
    assert main["scored_indices"] == [list(range(VAL))] * EPOCHS  # no padded repeat, none missing
    assert other["scored_indices"] == []  # rank 1 generates its shard and receives the scores
    for f in (main, other):
        assert sorted(map(int, f["predictions"])) == list(range(VAL))


@pytest.mark.parametrize("mode", MODES)
def test_captions_and_scores_equal_one_process(two_ranks, single, mode):
    for f in facts(two_ranks, mode, WORLD):
        assert f["predictions"] == single["predictions"]
        for key in CAPTION_SCORES:
            assert [e[key] for e in f["eval"]] == [e[key] for e in single["eval"]], key
