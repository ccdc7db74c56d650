"""Captions of different token counts: 2 ranks (DDP, ZeRO-2, DDP with 2 accumulation steps) and 1 process
with accumulation all train like 1 process with the whole global batch of 8.

`RecipeTrainer` normalises the training loss by the target tokens of the whole optimizer step, summed over
ranks and accumulation batches. Without that, each rank's loss is its own batch's token mean and DDP / ZeRO
average those means, which weights a token of a short-caption batch more than one of a long-caption batch.
Measured here with these captions (3 to 8 words), against 1 process x 8, as max |per-step loss difference| /
max |weight difference| over 3 epochs: before, 6.7e-3 / 5.4e-3 for 2-rank DDP, ZeRO-2 and 1 process x 4 x 2
accumulation steps, 7.9e-3 / 6.6e-3 for 2 ranks x 2 x 2; with it, at most 2.9e-6 / 4.6e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from jobs import GLOBAL_BATCH, RAGGED_EPOCHS, RAGGED_TWO_RANKS, SAMPLES, WORLD, facts
from safetensors.torch import load_file
from test_rank_invariance import LOSS_TOL, WEIGHT_TOL

from conftest import tiny_recipe

EPOCHS = RAGGED_EPOCHS
TWO_RANK_MODES = RAGGED_TWO_RANKS


@pytest.fixture(scope="module")
def data(shared_jobs) -> dict[str, Path]:
    return {"train": shared_jobs.data["ragged_train"], "val": shared_jobs.data["ragged_val"]}


@pytest.fixture(scope="module")
def single(shared_jobs) -> Path:
    """1 process: batch 8 (`ragged-ddp`), and batch 4 x 2 accumulation steps (`ragged-ddp+accum2`); patience
    above the epoch count: no early stop, every run trains all EPOCHS (tests/distributed/jobs.py)."""
    return shared_jobs.one_process


@pytest.fixture(scope="module")
def two_ranks(shared_jobs) -> Path:
    return shared_jobs.torchrun


def drift(run: Path, mode: str, reference: Path) -> tuple[float, float]:
    """Max |loss difference| over steps and max |weight difference| over epochs against 1 process x 8."""
    mine, ref = facts(run, f"ragged-{mode}", 1)[0], facts(reference, "ragged-ddp", 1)[0]
    assert mine["losses"].keys() == ref["losses"].keys()
    loss = max(abs(mine["losses"][s] - ref["losses"][s]) for s in ref["losses"])
    weights = 0.0
    for epoch in range(EPOCHS):
        a = load_file(str(run / f"ragged-{mode}" / f"epoch{epoch}.safetensors"))
        b = load_file(str(reference / "ragged-ddp" / f"epoch{epoch}.safetensors"))
        weights = max(weights, max((a[n] - b[n]).abs().max().item() for n in b))
    return loss, weights


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_the_ranks_batches_differ_in_token_count(two_ranks, data):
    """The data really is ragged where it matters: in most steps the two ranks' batches differ in tokens."""
    from trainers.models.blip import build_blip_tokenizer

    tokenizer = build_blip_tokenizer()
    captions = list(json.loads(data["train"].read_text()).values())
    tokens = [len(tokenizer(c)["input_ids"]) for c in captions]
    assert len(set(tokens)) >= 5, tokens
    ranks = facts(two_ranks, "ragged-ddp", WORLD)
    per_rank = GLOBAL_BATCH // WORLD
    differing = []
    for epoch in range(EPOCHS):
        for step in range(SAMPLES // GLOBAL_BATCH):
            totals = [
                sum(tokens[i] for i in r["indices_per_epoch"][epoch][step * per_rank : (step + 1) * per_rank])
                for r in ranks
            ]
            differing.append(totals[0] != totals[1])
    assert sum(differing) >= len(differing) // 2, differing


@pytest.mark.distributed
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mode", TWO_RANK_MODES)
def test_two_ranks_with_ragged_captions_equal_one_process(two_ranks, single, mode):
    loss, weights = drift(two_ranks, mode, single)
    print(
        f"ragged captions, 2 ranks {mode} vs 1 process x 8: max |loss diff| {loss:.2e}, "
        f"max |weight diff| {weights:.2e}"
    )
    assert loss <= LOSS_TOL and weights <= WEIGHT_TOL, (loss, weights)
    ranks = facts(two_ranks, f"ragged-{mode}", WORLD)
    assert ranks[0]["epoch_hashes"] == ranks[1]["epoch_hashes"]


@pytest.mark.distributed
@pytest.mark.timeout(1200)
def test_one_process_accumulating_ragged_batches_equals_the_whole_batch(single):
    loss, weights = drift(single, "ddp+accum2", single)
    print(
        f"ragged captions, 1 process 4 x 2 accumulation vs 8: max |loss diff| {loss:.2e}, "
        f"max |weight diff| {weights:.2e}"
    )
    assert loss <= LOSS_TOL and weights <= WEIGHT_TOL, (loss, weights)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from trainers.run import setup_run

    recipe = tiny_recipe(tmp_path_factory.mktemp("loss") / "run", batch_size=4)
    return setup_run(recipe).trainer


def batch_of(trainer, indices):
    return trainer.data_collator([trainer.train_dataset[i] for i in indices])


def test_count_matches_the_model_loss_terms_and_one_batch_is_unchanged(trainer):
    """The count is what BLIP averages over (position 0 is never a target), and with one process and no
    accumulation the loss is the model's own, bit for bit."""
    model = trainer.model
    model.train()
    batch = batch_of(trainer, range(4))
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1, "captions of one length prove nothing"
    batches, total = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
    assert total.item() == (batch["labels"][:, 1:] != -100).sum().item()
    out = model(**batch)
    token_sum = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        reduction="sum",
    )
    assert out.loss.item() == pytest.approx(token_sum.item() / total.item(), rel=1e-6)
    assert torch.equal(trainer.compute_loss(model, batch, num_items_in_batch=total), model(**batch).loss)
    assert trainer.loss_is_scaled_for_ga


def test_accumulated_batches_add_up_to_the_token_mean_of_the_step(trainer):
    model = trainer.model
    model.train()
    first, second = batch_of(trainer, range(4)), batch_of(trainer, range(4, 8))
    counts = [(b["labels"][:, 1:] != -100).sum().item() for b in (first, second)]
    assert counts[0] != counts[1], counts
    _, total = trainer.get_batch_samples(iter([first, second]), 2, trainer.args.device)
    step_loss = sum(trainer.compute_loss(model, b, num_items_in_batch=total) for b in (first, second))
    sums = []
    for b in (first, second):
        logits = model(**b).logits
        sums.append(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1), reduction="sum"
            )
        )
    assert step_loss.item() == pytest.approx((sums[0] + sums[1]).item() / total.item(), rel=1e-6)
    # what the Trainer trained on before: the mean of the two batch means (differs by 5e-5 here, at init)
    per_batch_means = (model(**first).loss + model(**second).loss) / 2
    assert abs(step_loss.item() - per_batch_means.item()) > 1e-5
