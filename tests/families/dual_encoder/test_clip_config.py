"""config/clip.yaml beside the Python recipe: layering (recipe < demo < YAML < key=value) and bad input with
file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from trainers.data_policy import DataError
from trainers.errors import RecipeError
from trainers.recipe import load_recipe
from trainers.recipe.yaml_config import apply_config_file

RECIPE = str(ROOT / "recipes" / "clip_minilm.py")


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clip.yaml"
    path.write_text(text)
    return path


def test_the_recipe_reads_config_clip_yaml_and_overrides_apply_on_top(monkeypatch):
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(RECIPE)
    text = recipe.encoder_configs.text
    assert (text.freeze_layers, text.freeze_backbone, text.pooling_strategy, text.embed_dim) == (
        4,
        False,
        "mean",
        256,
    )
    small = load_recipe(RECIPE, ["config=config/clip_small_data.yaml"])
    assert (small.encoder_configs.text.freeze_layers, small.encoder_configs.text.freeze_backbone) == (
        None,
        True,
    )
    top = load_recipe(RECIPE, ["encoder_configs.text.freeze_layers=2", "config=config/clip_small_data.yaml"])
    assert top.encoder_configs.text.freeze_layers == 2 and top.encoder_configs.text.freeze_backbone is True
    demo = load_recipe(RECIPE, demo=True)  # the demo names the small-data config
    assert demo.config == "config/clip_small_data.yaml" and demo.encoder_configs.text.freeze_backbone is True
    assert load_recipe(RECIPE, ["config=none"]).encoder_configs.text.freeze_layers is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "encoder_configs:\n  text:\n    freeze_layers: 4\n   embed_dim: 8\n",
            r"clip\.yaml:4: malformed YAML",
        ),
        (
            "encoder_configs:\n  text:\n    freez_layers: 4\n",
            r"clip\.yaml:3: unknown key 'encoder_configs\.text\.freez_layers'\. Did you mean: encoder_configs\.text\.freeze_layers",
        ),
        (
            "encoder_configs:\n  text:\n\n    freeze_layers: four\n",
            r"clip\.yaml:4: encoder_configs\.text\.freeze_layers='four': expected an integer",
        ),
        (
            "encoder_configs:\n  text:\n    pooling_strategy: max\n",
            r"clip\.yaml:3: encoder_configs\.text\.pooling_strategy='max': must be one of pooler, cls, mean",
        ),
        (
            "encoder_configs:\n  text:\n    freeze_backbone: maybe\n",
            r"clip\.yaml:3: encoder_configs\.text\.freeze_backbone='maybe': expected a boolean",
        ),
    ],
)
def test_bad_yaml_names_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(RECIPE, [f"config={_yaml(tmp_path, text)}"])


def test_embed_dim_not_positive_names_file_line_and_key(tmp_path):
    path = _yaml(tmp_path, "training:\n  epochs: 2\nencoder_configs:\n  text:\n    embed_dim: 0\n")
    with pytest.raises(
        RecipeError,
        match=r"clip\.yaml:5: encoder_configs\.text\.embed_dim must be > 0 \(the size of the shared embedding space\), got 0",
    ):
        load_recipe(RECIPE, [f"config={path}"])
    with pytest.raises(RecipeError, match=r"^command line: encoder_configs\.text\.embed_dim must be > 0"):
        load_recipe(RECIPE, [f"config={path}", "encoder_configs.text.embed_dim=-3"])


def test_a_missing_config_file_and_a_list_value(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(RECIPE, [f"config={tmp_path / 'nope.yaml'}"])
    recipe = load_recipe(RECIPE, ["config=none"])
    apply_config_file(recipe, _yaml(tmp_path, "evaluation:\n  recall_at: [1, 3]\n"))
    assert recipe.evaluation.recall_at == (1, 3)


def test_a_caption_file_naming_a_missing_image_names_file_and_line(tmp_path):
    from trainers.tasks.retrieval.data import read_pairs

    (tmp_path / "a.png").write_bytes(b"")
    captions = tmp_path / "train.json"
    captions.write_text('{\n "a.png": ["one", "two"],\n "b.png": ["three"]\n}\n')
    with pytest.raises(
        DataError, match=r"train\.json:3: data\.train names the image 'b\.png', but .*b\.png does not exist"
    ):
        read_pairs(captions, "data.train")


def test_launch_exits_2_with_the_paragraph(tmp_path, capsys, monkeypatch):
    import launch

    monkeypatch.chdir(ROOT)
    path = _yaml(tmp_path, "encoder_configs:\n  text:\n    pooling_strategy: max\n")
    assert launch.main([RECIPE, "--config", str(path), "--dry-run"]) == 2
    assert "clip.yaml:3: encoder_configs.text.pooling_strategy='max'" in capsys.readouterr().err
