"""A validation set that does not divide by ranks x eval batch: 7 images on 2 ranks with eval batch 2, under
DDP and ZeRO-3 (where generation is synchronised across ranks, so the shards are padded to equal lengths).

Rank 1's shard (1, 3, 5) is padded with a repeat of 5; the repeat must not reach the scorer twice and no image
may be missing: every evaluation scores each of the 7 images exactly once, on rank 0, and the captions and
METEOR / ROUGE-L / CIDEr-D (and their mean) are those of one process, bit for bit, on both ranks.
"""

from __future__ import annotations

import pytest
from jobs import UNEVEN_EPOCHS, UNEVEN_MODES, UNEVEN_VAL, WORLD, facts
from test_rank_invariance import CAPTION_SCORES

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(1200)]

VAL, EPOCHS, MODES = UNEVEN_VAL, UNEVEN_EPOCHS, UNEVEN_MODES
EVALUATIONS = 1 + EPOCHS  # the one before training (training.eval_on_start) and one per epoch


@pytest.fixture(scope="module")
def single(shared_jobs) -> dict:
    """1 process, eval batch 2 (`uneven-ddp` of the shared 1-process job, tests/distributed/jobs.py)."""
    return facts(shared_jobs.one_process, "uneven-ddp", 1)[0]


@pytest.fixture(scope="module")
def two_ranks(shared_jobs):
    return shared_jobs.torchrun


def test_one_process_scores_each_image_once(single):
    assert single["scored_indices"] == [list(range(VAL))] * EVALUATIONS
    assert sorted(map(int, single["predictions"])) == list(range(VAL))


@pytest.mark.parametrize("mode", MODES)
def test_every_image_is_scored_exactly_once_per_evaluation(two_ranks, mode):
    main, other = facts(two_ranks, f"uneven-{mode}", WORLD)
    assert len(main["eval"]) == EVALUATIONS
    assert main["scored_indices"] == [list(range(VAL))] * EVALUATIONS  # no padded repeat, none missing
    assert other["scored_indices"] == []  # rank 1 generates its shard and receives the scores
    for f in (main, other):
        assert sorted(map(int, f["predictions"])) == list(range(VAL))


@pytest.mark.parametrize("mode", MODES)
def test_captions_and_scores_equal_one_process(two_ranks, single, mode):
    for f in facts(two_ranks, f"uneven-{mode}", WORLD):
        assert f["predictions"] == single["predictions"]
        for key in CAPTION_SCORES:
            assert [e[key] for e in f["eval"]] == [e[key] for e in single["eval"]], key
