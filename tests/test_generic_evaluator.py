"""The generic sharded evaluator: every index scored once, padded batches run but dropped, same metrics on
every rank (a real 2-rank gloo group) as on one process; the captioning task through it gives the captions
and scores of a direct `generate` + caption scorer."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from trainers.evaluation import ShardedEvaluator, shard, synced_generation
from trainers.tasks.interface import Task

N, BATCH = 7, 2


class Items(Dataset):
    """Item i carries x = i; the model below predicts 2x + 1, so every prediction names its index."""

    def __init__(self, n: int = N) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.tensor([float(i)]), "i": i}


def collate(items: list[dict]) -> dict:
    return {"x": torch.stack([it["x"] for it in items]), "i": torch.tensor([it["i"] for it in items])}


def affine() -> nn.Module:
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(1.0)
    return model


class Doubling(Task[float]):
    name = "doubling"
    metrics = ("n", "sum", "error")

    def __init__(self, fail: bool = False) -> None:
        self.seen_batches: list[list[int]] = []
        self.fail = fail

    def predict(self, model, batch):
        assert not model.training and not torch.is_grad_enabled()
        self.seen_batches.append(batch["i"].tolist())
        return model(batch["x"]).squeeze(-1).tolist()

    def score(self, predictions, dataset):
        if self.fail:
            raise ValueError("bad references")
        return {
            "n": len(predictions),
            "sum": sum(predictions.values()),
            "error": sum(abs(p - (2 * i + 1)) for i, p in predictions.items()),
        }


def evaluate(rank: int = 0, world: int = 1, fail: bool = False) -> tuple[dict, ShardedEvaluator]:
    evaluator = ShardedEvaluator(Doubling(fail), Items(), collate, batch_size=BATCH)
    return evaluator.run(affine(), rank, world, "cpu"), evaluator


# the task's scores, and the evaluator's own count of different predictions (7 different numbers)
EXPECTED = {
    "n": 7.0,
    "sum": float(sum(2 * i + 1 for i in range(N))),
    "error": 0.0,
    "distinct_predictions": 7.0,
}


# ---------------------------------------------------------------------------------------- one process


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [0, 1, 6, 7, 13])
def test_shards_are_disjoint_cover_the_set_and_have_equal_lengths(n, world):
    shards = [shard(n, rank, world) for rank in range(world)]
    real = [i for s in shards for i in s.indices[: s.real]]
    assert sorted(real) == list(range(n))
    assert {len(s.indices) for s in shards} == {-(-n // world)}


def test_one_process_scores_every_index_once():
    metrics, evaluator = evaluate()
    assert metrics == EXPECTED
    assert sorted(evaluator.last_predictions) == list(range(N))
    assert evaluator.task.seen_batches == [[0, 1], [2, 3], [4, 5], [6]]


def test_evaluation_leaves_the_global_rng_alone():
    model, evaluator = affine(), ShardedEvaluator(Doubling(), Items(), collate, batch_size=BATCH)
    state = torch.random.get_rng_state()
    assert evaluator.run(model) == EXPECTED
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_short_shard_runs_as_many_padded_batches_and_drops_their_outputs():
    evaluator = ShardedEvaluator(Doubling(), Items(), collate, batch_size=BATCH)
    ranks = [evaluator.predict_shard(affine(), rank, 2, "cpu") for rank in (0, 1)]
    assert [i for i, _ in ranks[0]] == [0, 2, 4, 6] and [i for i, _ in ranks[1]] == [1, 3, 5]
    assert evaluator.task.seen_batches == [[0, 2], [4, 6], [1, 3], [5, 5]]  # rank 1's last batch is padding
    evaluator = ShardedEvaluator(Doubling(), Items(2), collate, batch_size=BATCH)
    assert evaluator.predict_shard(affine(), 3, 4, "cpu") == []  # more ranks than samples: one padded batch
    assert evaluator.forward_batches == 1


def test_gathered_predictions_must_hold_each_index_exactly_once():
    evaluator = ShardedEvaluator(Doubling(), Items(3), collate, batch_size=BATCH)
    with pytest.raises(RuntimeError, match="exactly once"):
        evaluator.complete([(0, 1.0), (1, 3.0), (1, 3.0)])
    with pytest.raises(RuntimeError, match="exactly once"):
        evaluator.score([(0, 1.0), (1, 3.0)], 0, 1)
    assert evaluator.complete([(2, 5.0), (0, 1.0), (1, 3.0)]) == {0: 1.0, 1: 3.0, 2: 5.0}


def test_predict_must_return_one_prediction_per_item():
    class Short(Doubling):
        def predict(self, model, batch):
            return super().predict(model, batch)[:1]

    with pytest.raises(RuntimeError, match="returned 1 predictions for a batch of 2"):
        ShardedEvaluator(Short(), Items(), collate, batch_size=BATCH).run(affine())


def test_called_with_a_trainer_it_uses_the_unwrapped_model_and_the_args_rank():
    model = affine()
    unwrapped = []
    trainer = SimpleNamespace(
        model=("wrapped", model),
        args=SimpleNamespace(process_index=0, world_size=1, device=torch.device("cpu")),
        accelerator=SimpleNamespace(unwrap_model=lambda m: unwrapped.append(m) or m[1]),
    )
    evaluator = ShardedEvaluator(Doubling(), Items(), collate, batch_size=3, prefix="extra_")
    model.train()
    assert evaluator(trainer) == {f"extra_{k}": v for k, v in EXPECTED.items()}
    assert unwrapped and model.training  # train mode restored
    assert not synced_generation()


# ------------------------------------------------------------------------------------------ two ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LosesOnRank1(ShardedEvaluator):
    """A broken shard: rank 1 drops its last prediction, so rank 0 cannot see every index."""

    def predict_shard(self, model, rank, world, device):
        pairs = super().predict_shard(model, rank, world, device)
        return pairs[:-1] if rank == 1 else pairs


def _outcome(call) -> str | None:
    try:
        call()
    except (RuntimeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metrics, evaluator = evaluate(rank, world)
        record = {
            "metrics": metrics,
            "batches": evaluator.task.seen_batches,
            "predicted": sorted(evaluator.last_predictions),
        }
        record["failure"] = _outcome(lambda: evaluate(rank, world, fail=True))
        lossy = LosesOnRank1(Doubling(), Items(), collate, batch_size=BATCH)
        record["lost"] = _outcome(lambda: lossy.run(affine(), rank, world, "cpu"))
        Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_score_each_index_once_and_agree_with_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single, _ = evaluate()
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == single == EXPECTED
    assert ranks[0]["predicted"] == ranks[1]["predicted"] == list(range(N))  # scored on rank 0, sent to all
    assert ranks[0]["batches"] == [[0, 2], [4, 6]] and ranks[1]["batches"] == [[1, 3], [5, 5]]
    # a failure while scoring on rank 0 reaches rank 1 instead of leaving it waiting for the metrics
    assert ranks[0]["failure"] == "ValueError: bad references"
    assert ranks[1]["failure"] == "RuntimeError: scoring on rank 0 failed: ValueError: bad references"
    # so does a gathered set that misses an index
    assert ranks[0]["lost"].startswith(
        "RuntimeError: evaluation gathered 6 predictions for 6 distinct indices"
    )
    assert ranks[1]["lost"].startswith(
        "RuntimeError: scoring on rank 0 failed: RuntimeError: evaluation gathered 6"
    )


# ---------------------------------------------------------------------------- captioning moves onto it


def test_captioning_task_through_it_gives_generate_and_caption_scorer_results(shapes_dir):
    """The captioning task's predict/score on the generic evaluator = batched `generate` + decode over the whole
    set, scored by the caption scorer, with the distinct-prediction count and shapes accuracies beside it."""
    from trainers.metrics.captions import CaptionScorer
    from trainers.models.blip import TinyBlipSpec, build_tiny_blip
    from trainers.recipe import CaptionData, Evaluation, Model, Recipe
    from trainers.tasks.captioning.scoring import generation_kwargs
    from trainers.tasks.captioning.shapes import score_shapes_captions
    from trainers.tasks.captioning.task import CaptioningTask

    settings = Evaluation(metrics=("rouge_l",), num_beams=2, max_length=12)
    model, processor = build_tiny_blip(TinyBlipSpec(), seed=0)
    recipe = Recipe(
        name="eq",
        model=Model(id="tiny", family="blip"),
        evaluation=settings,
        data=CaptionData(
            train=str(shapes_dir / "train.json"),
            val=str(shapes_dir / "val.json"),
            images=str(shapes_dir / "images"),
            max_val_samples=6,
            max_train_samples=8,
        ),
    )
    task = CaptioningTask()
    data = task.build(recipe, processor)
    val = data.val
    trainer = SimpleNamespace(
        model=model,
        args=SimpleNamespace(process_index=0, world_size=1, device="cpu"),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
    )
    new = ShardedEvaluator(task, val, data.eval_collator, batch_size=4)
    metrics = new(trainer)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([val[i]["pixel_values"] for i in range(len(val))])
        output = model.generate(pixel_values=pixels, **generation_kwargs(settings))
    expected = {i: t.strip() for i, t in enumerate(processor.batch_decode(output, skip_special_tokens=True))}
    refs = {i: val.references[i] for i in expected}
    scorer = CaptionScorer(settings.metrics)
    assert new.last_predictions == expected and len(expected) == 6
    assert metrics["rouge_l"] == scorer.score(expected, refs)["rouge_l"]
    assert metrics["distinct_predictions"] == len(set(expected.values()))
    assert metrics["object_accuracy"] == score_shapes_captions(expected, refs).object_accuracy
    assert task.baseline() is not None and metrics["baseline_rouge_l"] == task.baseline().scores["rouge_l"]
    scorer.close()
    new.close()
