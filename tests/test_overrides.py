"""`key=value` overrides: dotted, typed, validated, with suggestions for unknown keys."""

from __future__ import annotations

import pytest

from trainers.errors import RecipeError
from trainers.recipe import (
    CaptionData,
    EarlyStopping,
    Freeze,
    Model,
    ParamGroup,
    Recipe,
    apply_overrides,
    mean,
    parse_override,
)


def make_recipe() -> Recipe:
    return Recipe(
        name="r",
        model=Model(id="some/model", family="blip"),
        data=CaptionData(train="t.json", val="v.json", images="img"),
        freeze=[Freeze("vision_model")],
        param_groups=[ParamGroup("vision", match="^vision_model", lr_mult=0.1)],
        early_stopping=EarlyStopping(metric=mean("meteor", "cider_d"), patience=5),
    )


def test_scalar_types_are_coerced():
    r = make_recipe()
    apply_overrides(
        r, ["training.epochs=3", "training.lr=1e-4", "reporting.wandb=false", "data.train=/x/y.json"]
    )
    assert r.training.epochs == 3 and isinstance(r.training.epochs, int)
    assert r.training.lr == pytest.approx(1e-4)
    assert r.reporting.wandb is False
    assert r.data.train == "/x/y.json"


def test_optional_list_literal_and_index():
    r = make_recipe()
    apply_overrides(
        r,
        [
            "training.eval_batch_size=4",
            "data.max_train_samples=none",
            "evaluation.metrics=meteor,rouge_l",
            "training.precision=bf16",
        ],
    )
    assert r.training.eval_batch_size == 4
    assert r.data.max_train_samples is None
    assert r.evaluation.metrics == ("meteor", "rouge_l")
    assert r.training.precision == "bf16"


def test_immutable_rule_fields_explain_themselves():
    r = make_recipe()
    with pytest.raises(RecipeError, match="immutable rule"):
        apply_overrides(r, ["param_groups.0.lr_mult=0.25"])


def test_section_can_be_switched_off():
    r = make_recipe()
    apply_overrides(r, ["early_stopping=none"])
    assert r.early_stopping is None


def test_early_stopping_metric_accepts_a_plain_name():
    r = make_recipe()
    apply_overrides(r, ["early_stopping.metric=meteor", "early_stopping.patience=2"])
    assert r.early_stopping.metric == "meteor"
    assert r.early_stopping.patience == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.epoch=3", "Did you mean: training.epochs"),
        ("trainng.lr=1", "Did you mean: training.lr"),
        ("training.batchsize=4", "training.batch_size"),
        ("nonsense=1", "Top-level sections"),
    ],
)
def test_unknown_key_suggests_closest(override, expected):
    with pytest.raises(RecipeError, match="Unknown override key") as info:
        apply_overrides(make_recipe(), [override])
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.epochs=three", "expected an integer"),
        ("training.lr=fast", "expected a number"),
        ("reporting.wandb=maybe", "expected a boolean"),
        ("training.precision=fp8", "must be one of"),
        ("param_groups.7.lr_mult=1", "not a valid index"),
        ("training.epochs", "not of the form key=value"),
        ("=3", "not of the form key=value"),
    ],
)
def test_bad_values_fail_with_a_reason(override, expected):
    with pytest.raises(RecipeError, match=expected):
        apply_overrides(make_recipe(), [override])


def test_parse_override_keeps_equals_in_value():
    assert parse_override("data.train=a=b.json") == ("data.train", "a=b.json")


def test_validation_rejects_contradictions():
    r = make_recipe()
    apply_overrides(r, ["training.epochs=0"])
    with pytest.raises(RecipeError, match="training.epochs must be >= 1"):
        r.validate()


def test_resume_takes_the_four_rerun_choices():
    r = make_recipe()
    for value in ("auto", "never", "force", "overwrite"):
        apply_overrides(r, [f"training.resume={value}"])
        assert r.training.resume == value
    with pytest.raises(RecipeError, match="must be one of auto, never, force, overwrite"):
        apply_overrides(r, ["training.resume=sometimes"])


def test_dict_valued_fields_take_one_entry_per_override():
    """`data.extra_val.NAME=DIR` adds a validation set; `demo.KEY=VALUE` changes what `--demo` applies (the
    whole rest of the key is the entry's name), and wins over the recipe's demo value under --demo."""
    from conftest import ROOT
    from trainers.recipe import load_recipe

    r = load_recipe(
        ROOT / "recipes" / "vit_lora.py",
        ["data.extra_val.hard=data/tiny_classes/test", "demo.training.epochs=2"],
        demo=True,
    )
    assert r.data.extra_val == {"hard": "data/tiny_classes/test"}
    assert r.demo["training.epochs"] == "2" and r.training.epochs == 2
    assert load_recipe(ROOT / "recipes" / "vit_lora.py", ["demo.training.epochs=2"]).training.epochs == 5


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.extra_val=/x", "set one entry with data.extra_val.NAME=VALUE"),
        ("data.extra_val.hard.path=/x", "data.extra_val is a mapping; set one whole entry"),
    ],
)
def test_dict_valued_fields_refuse_what_they_cannot_take_in_one_paragraph(override, expected):
    from conftest import ROOT
    from trainers.recipe import load_recipe

    with pytest.raises(RecipeError, match=expected.replace(".", r"\.")):
        load_recipe(ROOT / "recipes" / "vit_lora.py", [override])
