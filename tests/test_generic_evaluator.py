"""The generic sharded evaluator: every index scored once, padded batches run but dropped, same metrics on
every rank (a real 2-rank gloo group) as on one process; captioning's predict/score give CaptionEvaluator's
captions and scores through it."""

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


EXPECTED = {"n": 7.0, "sum": float(sum(2 * i + 1 for i in range(N))), "error": 0.0}


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
        record = {"metrics": metrics, "batches": evaluator.task.seen_batches,
                  "predicted": sorted(evaluator.last_predictions)}
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
    assert ranks[0]["predicted"] == list(range(N)) and ranks[1]["predicted"] == []  # gathered on rank 0 only
    assert ranks[0]["batches"] == [[0, 2], [4, 6]] and ranks[1]["batches"] == [[1, 3], [5, 5]]
    # a failure while scoring on rank 0 reaches rank 1 instead of leaving it waiting for the metrics
    assert ranks[0]["failure"] == "ValueError: bad references"
    assert ranks[1]["failure"] == "RuntimeError: scoring on rank 0 failed: ValueError: bad references"
    # so does a gathered set that misses an index
    assert ranks[0]["lost"].startswith("RuntimeError: evaluation gathered 6 predictions for 6 distinct indices")
    assert ranks[1]["lost"].startswith("RuntimeError: scoring on rank 0 failed: RuntimeError: evaluation gathered 6")


# ---------------------------------------------------------------------------- captioning moves onto it


def test_captioning_predict_and_score_through_it_give_caption_evaluator_results(shapes_dir):
    from trainers.models.blip import TinyBlipSpec, build_tiny_blip
    from trainers.recipe.config import Evaluation
    from trainers.tasks.captioning.data import CaptionCollator, CaptionJsonDataset
    from trainers.tasks.captioning.evaluation import CaptionEvaluator
    from trainers.tasks.captioning.metrics import CaptionScorer

    settings = Evaluation(metrics=("rouge_l",), num_beams=2, max_length=12)

    class Captioning(Task[str]):
        """Captioning's evaluation as interface hooks: batched `generate` + decode, then corpus scores."""

        name = "captioning"

        def predict(self, model, batch):
            kwargs = {"num_beams": settings.num_beams, "no_repeat_ngram_size": settings.no_repeat_ngram_size,
                      "repetition_penalty": settings.repetition_penalty, "length_penalty": settings.length_penalty,
                      "max_length": settings.max_length, "early_stopping": True}
            if synced_generation():
                kwargs["synced_gpus"] = True
            output = model.generate(pixel_values=batch["pixel_values"], **kwargs)
            return [t.strip() for t in processor.batch_decode(output, skip_special_tokens=True)]

        def score(self, predictions, dataset):
            refs = dataset.references
            return CaptionScorer(settings.metrics).score(dict(predictions), {i: refs[i] for i in predictions})

    model, processor = build_tiny_blip(TinyBlipSpec(), seed=0)
    val = CaptionJsonDataset(shapes_dir / "val.json", shapes_dir / "images", processor.image_processor, limit=6)
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(process_index=0, world_size=1, device="cpu"),
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    old = CaptionEvaluator(val, CaptionCollator(processor.tokenizer, include_index=True), processor, settings, batch_size=4)
    pixels_only = lambda items: {"pixel_values": torch.stack([it["pixel_values"] for it in items])}  # noqa: E731
    new = ShardedEvaluator(Captioning(), val, pixels_only, batch_size=4)
    expected = old(trainer)
    # the captioning evaluator also reports distinct predictions and, on the shapes set, object accuracy
    assert new(trainer) == {"rouge_l": expected["rouge_l"]}
    assert expected["distinct_predictions"] == len(set(old.last_predictions.values()))
    assert new.last_predictions == old.last_predictions and len(new.last_predictions) == 6
    old.close()
