"""Layer importance: a layer whose gradient is made 50x larger ranks first; the command runs on the ViT LoRA
demo and writes its table, JSON and plot; parameter names group into layers the same with and without peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers.analysis.importance import analysis_overrides, main, measure, no_gradient, rank_layers
from trainers.analysis.layers import group_names, layer_of

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "vit_lora.py"
SMALL = ["data.max_train_samples=48", "training.batch_size=8"]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_layer_groups_read_through_peft_names():
    assert layer_of("vit.encoder.layer.3.attention.q_proj.weight") == "vit.encoder.layer.3"
    assert (
        layer_of("base_model.model.vit.encoder.layer.3.attention.q_proj.lora_A.default.weight")
        == "vit.encoder.layer.3"
    )
    assert layer_of("base_model.model.classifier.modules_to_save.default.bias") == "classifier"
    assert (
        layer_of("text_decoder.bert.encoder.layer.11.output.dense.bias")
        == "text_decoder.bert.encoder.layer.11"
    )
    assert layer_of("vit.embeddings.patch_embeddings.projection.weight") == "vit.embeddings"
    assert layer_of("logit_scale") == "logit_scale"
    # a module path that also holds numbered blocks is cut deeper: BLIP's word embeddings are not all of `bert`
    groups = group_names(
        [
            "text_decoder.bert.embeddings.word_embeddings.weight",
            "text_decoder.bert.encoder.layer.0.output.dense.weight",
            "text_decoder.cls.predictions.bias",
        ]
    )
    assert list(groups.values()) == [
        "text_decoder.bert.embeddings",
        "text_decoder.bert.encoder.layer.0",
        "text_decoder.cls",
    ]


def test_layers_without_any_gradient_are_listed_apart_not_ranked():
    per_step = [{"a": 4.0, "b": 0.0, "c": 1.0}, {"a": 0.0, "b": 0.0, "c": 9.0}]  # squared norms
    rows = rank_layers(per_step, {"a": 4, "b": 4, "c": 1})
    assert [(r.layer, r.mean_grad_norm, r.max_grad_norm, r.norms) for r in rows] == [
        ("c", 2.0, 3.0, [1.0, 3.0]),
        ("a", 1.0, 2.0, [2.0, 0.0]),
    ]
    assert rows[0].share == pytest.approx(10 / 14) and rows[1].rms == pytest.approx(0.5)
    assert no_gradient(per_step, {"a": 4, "b": 4, "c": 1}) == ["b"]


def test_a_layer_with_a_50x_gradient_ranks_first(tmp_path):
    from trainers.recipe import load_recipe
    from trainers.run import setup_run

    out = tmp_path / "scaled"
    extra = [*SMALL, "lora=none", *analysis_overrides(3, out)]
    ctx = setup_run(load_recipe(RECIPE, extra, demo=True), extra)
    natural = measure(ctx, 3, progress=False)
    assert natural.layers[0].layer != "vit.layers.1"  # not first by itself

    ctx = setup_run(load_recipe(RECIPE, extra, demo=True), extra)
    for name, param in ctx.trainer.model.named_parameters():
        if layer_of(name) == "vit.layers.1":
            param.register_hook(lambda g: g * 50)
    scaled = measure(ctx, 3, progress=False)
    by_layer = {r.layer: r for r in natural.layers}
    assert scaled.layers[0].layer == "vit.layers.1", [r.layer for r in scaled.layers]
    assert scaled.steps == 3 and scaled.gradient_source == "p.grad" and not scaled.frozen_layers
    # the first step's gradient is taken at the same weights on the same batch in both runs: 50x there
    assert scaled.layers[0].norms[0] == pytest.approx(50 * by_layer["vit.layers.1"].norms[0], rel=1e-6)
    for row in scaled.layers[1:]:  # every other layer: its own first-step gradient, unchanged
        assert row.norms[0] == pytest.approx(by_layer[row.layer].norms[0], rel=1e-6), row.layer
    assert sum(r.params for r in scaled.layers) == sum(p.numel() for p in ctx.trainer.model.parameters())


def test_command_on_the_lora_demo_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "importance"
    assert main([str(RECIPE), *SMALL, "--demo", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "layer_importance.json").read_text())
    assert report["steps"] == 4 and len(report["losses"]) >= 1
    layers = [r["layer"] for r in report["layers"]]
    # LoRA on q/v of each of the 4 blocks and the classifier trained fully; embeddings and final norm frozen
    assert sorted(layers) == ["classifier", *(f"vit.layers.{i}" for i in range(4))]
    assert report["frozen_layers"] == ["vit.embeddings", "vit.layernorm"]
    norms = [r["mean_grad_norm"] for r in report["layers"]]
    assert norms == sorted(norms, reverse=True) and norms[-1] > 0
    assert abs(sum(r["share"] for r in report["layers"]) - 1) < 1e-9
    assert (
        f"| 1 | {layers[0]} |" in printed and "Frozen (no gradient): vit.embeddings, vit.layernorm" in printed
    )
    assert (out / "layer_importance.png").read_bytes()[:4] == b"\x89PNG"
    assert "gradient norms" not in capsys.readouterr().err  # --quiet: no progress bar


def test_an_out_dir_holding_a_training_run_is_refused(tmp_path, capsys):
    (tmp_path / "checkpoints" / "checkpoint-12").mkdir(parents=True)
    assert main([str(RECIPE), "--demo", "--out", str(tmp_path)]) == 2
    assert "holds a training run" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "checkpoint-12").is_dir()
    assert main([str(RECIPE), "--demo", "training.precision=fp16", "--out", str(tmp_path / "fp16")]) == 2
    assert "still loss-scaled" in capsys.readouterr().err
