"""The retrieval task: R@K / rank metrics on hand-made cases, the chance baseline, the loss against HF's,
pooling strategies, the temperature clamp, and a short 1-process run whose stage trains exactly the declared
text layer from the declared epoch."""

from __future__ import annotations

import math

import pytest
import torch
from clip_helpers import LayerChanges, tiny_clip_recipe
from PIL import Image

from trainers.tasks.retrieval.metrics import chance_baseline, ranks, retrieval_scores


def test_ranks_on_a_hand_made_case():
    images = torch.eye(3)
    # caption 0 -> image 0 best; caption 1 (image 1) prefers image 2, then image 1; caption 2 -> image 2 best
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0]])
    owner = torch.tensor([0, 1, 2])
    t2i, i2t = ranks(images, texts, owner)
    assert t2i.tolist() == [1, 2, 1]
    # each image's own caption scores highest in its column (1.0, 0.6, 1.0), though caption 1 prefers image 2
    assert i2t.tolist() == [1, 1, 1]
    scores = retrieval_scores(t2i, i2t, (1, 2))
    assert scores["t2i_r1"] == pytest.approx(2 / 3) and scores["t2i_r2"] == 1.0
    assert scores["i2t_r1"] == 1.0 and scores["t2i_mean_rank"] == pytest.approx(4 / 3)
    assert scores["t2i_median_rank"] == 1.0
    assert scores["mean_recall"] == pytest.approx((2 / 3 + 1 + 1 + 1) / 4)


def test_several_captions_per_image_use_the_best_ranked_one():
    images = torch.eye(2)
    texts = torch.nn.functional.normalize(torch.tensor([[0.1, 1.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    owner = torch.tensor([0, 0, 1])  # image 0 owns a bad caption (pointing at image 1) and a perfect one
    t2i, i2t = ranks(images, texts, owner)
    assert t2i.tolist() == [2, 1, 1]
    assert i2t.tolist() == [1, 1]


def test_chance_baseline_matches_a_random_ranking():
    base = chance_baseline([3] * 10, (1, 5))
    assert base.scores["t2i_r1"] == pytest.approx(0.1) and base.scores["t2i_mean_rank"] == 5.5
    assert base.scores["i2t_r1"] == pytest.approx(3 / 30)
    assert base.scores["i2t_r5"] == pytest.approx(1 - math.comb(27, 5) / math.comb(30, 5))
    generator = torch.Generator().manual_seed(0)
    owner = torch.arange(10).repeat_interleave(3)
    draws = [
        retrieval_scores(
            *ranks(
                torch.nn.functional.normalize(torch.randn(10, 64, generator=generator), dim=-1),
                torch.nn.functional.normalize(torch.randn(30, 64, generator=generator), dim=-1),
                owner,
            ),
            (1, 5),
        )
        for _ in range(300)
    ]
    for key in ("t2i_r5", "i2t_r5", "t2i_mean_rank"):
        measured = sum(d[key] for d in draws) / len(draws)
        assert measured == pytest.approx(base.scores[key], rel=0.08), key


@pytest.fixture(scope="module")
def tiny():
    from trainers.models.dual_encoder import (
        EncoderConfigs,
        TextEncoderConfig,
        TinyBertSpec,
        TinyDualEncoderSpec,
        build_tiny_dual_encoder,
    )

    def build(pooling: str = "mean"):
        configs = EncoderConfigs(text=TextEncoderConfig(embed_dim=16, pooling_strategy=pooling))
        return build_tiny_dual_encoder(TinyDualEncoderSpec(text=TinyBertSpec()), encoder_configs=configs)

    return build


def _batch(processor):
    from PIL import Image

    images = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green")]
    text = processor.tokenizer(
        ["a red square", "a blue circle above a red one", "green"], padding=True, return_tensors="pt"
    )
    return {
        "pixel_values": processor.image_processor(images=images, return_tensors="pt")["pixel_values"],
        **text,
    }


def test_the_loss_is_hf_clip_loss_and_the_model_starts_at_1_over_0_07(tiny):
    from transformers.models.vision_text_dual_encoder.modeling_vision_text_dual_encoder import (
        image_text_contrastive_loss,
    )

    from trainers.tasks.retrieval.task import RetrievalTask

    model, processor = tiny()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    model.eval()
    batch = _batch(processor)
    with torch.no_grad():
        ours = RetrievalTask().compute_loss(model, batch)
        out = model(**batch, return_loss=True)
    assert ours.item() == pytest.approx(image_text_contrastive_loss(out.logits_per_text).item(), abs=1e-6)
    assert ours.item() == pytest.approx(out.loss.item(), abs=1e-6)


def test_pooling_strategies(tiny):
    batch = None
    embeddings = {}
    for pooling in ("mean", "cls", "pooler"):
        model, processor = tiny(pooling)
        model.eval()
        batch = batch or _batch(processor)
        names = [n for n, _ in model.named_parameters()]
        assert any(n.startswith("text_model.pooler.") for n in names) == (pooling == "pooler")
        with torch.no_grad():
            hidden = model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            expected = {"mean": (hidden * mask).sum(1) / mask.sum(1), "cls": hidden[:, 0]}.get(pooling)
            if expected is None:
                expected = model.text_model.pooler(hidden)
            got = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds
            want = torch.nn.functional.normalize(model.text_projection(expected), dim=-1)
        assert torch.allclose(got, want, atol=1e-6), pooling
        embeddings[pooling] = got
    assert not torch.allclose(embeddings["mean"], embeddings["cls"], atol=1e-3)


def test_the_temperature_is_clamped_at_100(tiny):
    from trainers.tasks.retrieval.task import RetrievalTask

    model, processor = tiny()
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # e^6 = 403
    model.eval()
    out = model(**_batch(processor))
    assert out.logit_scale.item() == pytest.approx(math.log(100))  # the forward never uses more than 100
    assert model.logit_scale.item() == 6.0
    model.train()
    RetrievalTask().compute_loss(model, _batch(processor))
    assert model.logit_scale.item() == pytest.approx(math.log(100))  # clamped in place before the step


def test_a_short_run_trains_the_stage_layer_from_its_epoch(tmp_path):
    """1 process: the text tower frozen (freeze_layers=-1), a stage at epoch 1 thawing its last layer. The
    embeddings and layer 0 never move; layer 1 is still at epoch 0 and moves in epoch 1. No weight decay on
    the temperature."""
    from trainers.recipe import Stage
    from trainers.run import complete_run, setup_run

    recipe = tiny_clip_recipe(tmp_path / "run", epochs=2, train=32, val=16)
    recipe.encoder_configs.text.freeze_layers = -1
    recipe.stages = [Stage(epoch=1, unfreeze="text_model.encoder.layer[-1:]")]
    changes = LayerChanges()
    recipe.callbacks = [changes.callback]
    ctx = setup_run(recipe)
    groups = {g["name"]: g for g in ctx.trainer.create_optimizer().param_groups}
    assert groups["temperature/decay"]["weight_decay"] == 0.0
    assert groups["text/stage0/decay"]["lr"] == pytest.approx(0.5 * recipe.training.lr)
    start = ctx.trainer.evaluator(ctx.trainer)
    summary = complete_run(ctx)
    assert [c["layer1"] for c in changes.moved][0] == 0.0 and changes.moved[1]["layer1"] > 0
    assert all(c["layer0"] == 0.0 and c["embeddings"] == 0.0 for c in changes.moved)
    assert summary["stages_opened_at_step"] == {"0": 4}
    final = summary["final_metrics"]
    assert {"mean_recall", "t2i_r1", "i2t_r10", "t2i_median_rank", "i2t_mean_rank"} <= set(final)
    assert summary["baseline"]["t2i_r1"] == pytest.approx(1 / 16)
    assert summary["best_metric"]["name"] == "mean_recall"
    picture = Image.open(tmp_path / "run" / "eval" / "retrieval.png")  # 6 queries of the 16 val images
    assert picture.height > 6 * 106 and picture.width > 280 + 5 * 106
    print(f"tiny run: mean recall {start['mean_recall']:.3f} -> {final['mean_recall']:.3f}")


def test_a_saved_model_reloads_by_the_trainers_plain_load_state_dict_and_from_pretrained(tiny, tmp_path):
    """`best/` and the checkpoints hold the module's own names, so the Trainer's best-model reload (a plain
    `load_state_dict`) restores every tensor; `load_dual_encoder` reads the directory back whole."""
    from safetensors.torch import load_file

    from trainers.models.dual_encoder import load_dual_encoder

    model, processor = tiny()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    fresh, _ = tiny()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    result = fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    reloaded, reprocessor = load_dual_encoder(str(tmp_path))
    names = [n for n, _ in model.named_parameters()]
    assert [n for n, _ in reloaded.named_parameters()] == names  # no text pooler rebuilt for mean pooling
    assert len(reprocessor.tokenizer) == 30522  # MiniLM's WordPiece vocabulary, not a 5-token fallback
    assert reprocessor.tokenizer.convert_tokens_to_ids("circle") != reprocessor.tokenizer.unk_token_id
    batch = _batch(processor)
    model.eval(), fresh.eval(), reloaded.eval()
    with torch.no_grad():
        expected = model(**batch).text_embeds
        assert torch.equal(fresh(**batch).text_embeds, expected)
        assert torch.equal(reloaded(**batch).text_embeds, expected)
