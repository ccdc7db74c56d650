"""Freeze rules: module path, slices (first-N / last-N), index, regex, `*`; errors; the freeze map."""

from __future__ import annotations

import pytest
from torch import nn

from trainers.errors import FreezeTargetError
from trainers.freezing.report import build_freeze_report
from trainers.freezing.rules import apply_freeze_rules
from trainers.freezing.selectors import select_parameters
from trainers.recipe import Freeze, Unfreeze


class Toy(nn.Module):
    """embed(10x4, tied to head) → 6 Linear(4,4) layers → LayerNorm → head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(6))
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as in an LM head


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def layer_params(*indices: int) -> set[str]:
    return {f"encoder.layers.{i}.{k}" for i in indices for k in ("weight", "bias")}


def test_module_path_freezes_the_subtree():
    m = Toy()
    apply_freeze_rules(m, [Freeze("encoder")])
    assert trainable(m) == {"embed.weight", "norm.weight", "norm.bias"}


def test_first_n_and_last_n_layers():
    m = Toy()
    apply_freeze_rules(m, [Freeze.first("encoder.layers", 2)])
    assert not trainable(m) & layer_params(0, 1)
    assert layer_params(2, 3, 4, 5) <= trainable(m)

    m = Toy()
    apply_freeze_rules(m, [Freeze("encoder"), Unfreeze.last("encoder.layers", 2)])
    assert trainable(m) & {n for n, _ in m.named_parameters() if n.startswith("encoder")} == layer_params(
        4, 5
    )


def test_index_and_star_and_order():
    m = Toy()
    apply_freeze_rules(m, [Freeze("*"), Unfreeze("encoder.layers[0]"), Unfreeze("norm")])
    assert trainable(m) == layer_params(0) | {"norm.weight", "norm.bias"}


def test_regex_matches_parameter_names():
    m = Toy()
    apply_freeze_rules(m, [Freeze(regex=r"\.bias$")])
    assert all(not n.endswith(".bias") for n in trainable(m))
    assert "encoder.layers.3.weight" in trainable(m)


def test_rule_effects_are_recorded():
    m = Toy()
    effects = apply_freeze_rules(m, [Freeze("encoder"), Unfreeze("encoder.layers[-1:]")])
    assert [(e.tensors, e.params) for e in effects] == [(12, 6 * 20), (2, 20)]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Freeze("encoder.layer"), "Nearest module paths: encoder.layers"),
        (Freeze("encodr"), "encoder"),
        (Freeze("norm[0]"), "not a layer list"),
        (Freeze("encoder.layers[9]"), "not a valid index"),
        (Freeze("encoder.layers[6:]"), "empty slice"),
        (Freeze(regex="^decoder\\."), "matches no parameter name"),
    ],
)
def test_a_target_matching_nothing_is_an_error_with_nearest_names(rule, message):
    with pytest.raises(FreezeTargetError, match="freeze\\[0\\]") as info:
        apply_freeze_rules(Toy(), [rule])
    assert message in str(info.value)


def test_rule_needs_exactly_one_selector():
    from trainers.errors import RecipeError

    with pytest.raises(RecipeError, match="exactly one"):
        Freeze()
    with pytest.raises(RecipeError, match="not a valid regular expression"):
        Freeze(regex="(")


def test_tied_head_is_one_tensor_counted_once():
    m = Toy()
    names = select_parameters(m, target="head")
    assert names == ["embed.weight"]  # the head's weight *is* the embedding: reported by its canonical name
    apply_freeze_rules(m, [Freeze("head")])
    assert not m.embed.weight.requires_grad  # freezing the head froze the shared embedding too
    report = build_freeze_report(m)
    assert report.total == 10 * 4 + 6 * 20 + 8  # head adds nothing: tied
    assert report.tied == {"embed.weight": ["head.weight"]}


def test_freeze_report_counts_per_top_level_module_and_scheduled():
    m = Toy()
    effects = apply_freeze_rules(m, [Freeze("encoder"), Unfreeze("encoder.layers[-2:]")])
    report = build_freeze_report(m, effects, scheduled=layer_params(3))
    rows = {r.module: (r.total, r.trainable, r.scheduled) for r in report.modules}
    assert rows["encoder"] == (120, 40, 20)  # layers 4-5 train now, layer 3 waits for a stage
    assert rows["embed"] == (40, 40, 0)
    assert report.trainable == 40 + 40 + 8
    assert report.trainable_ratio == pytest.approx(88 / 168)
    text = report.render()
    assert "encoder" in text and "TOTAL" in text and "rule: freeze encoder -> 12 tensors, 120 params" in text
