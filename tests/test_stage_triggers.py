"""Stages that open on a signal (`step=`, `on_plateau=True`), early stopping that waits for the last stage, and
the re-warm-up of a newly opened stage's learning rate."""

from __future__ import annotations

import pytest
import torch
from test_early_stopping import ScriptedEvaluator
from transformers import TrainerCallback

from conftest import tiny_recipe
from trainers.freezing.schedule import OPENED_KEY, StageTrigger, decide
from trainers.recipe import EarlyStopping, Freeze, Stage, Unfreeze
from trainers.run import complete_run, setup_run

LAYERS = "vision_model.encoder.layers"
STEPS_PER_EPOCH = 4  # 32 samples / batch 8


def higher(value: float, best: float) -> bool:
    return value > best


def run_rule(values, triggers, stop_patience):
    """Apply the rule evaluation by evaluation as the callback does (steps 1, 2, ...), recording openings."""
    openings: dict[int, int] = {}
    for i in range(len(values)):
        history = list(enumerate(values[: i + 1], start=1))
        decision = decide(history, higher, stop_patience, triggers, openings)
        if decision.opens is not None:
            openings[decision.opens] = history[-1][0]
        if decision.should_stop:
            return openings, history[-1][0]
    return openings, None


def test_a_plateau_opens_the_next_stage_instead_of_stopping():
    values = [0.1, 0.3, 0.2, 0.25, 0.28, 0.27, 0.26, 0.2]
    # no stage: best at eval 2, evals 3-5 do not improve -> patience 3 stops at eval 5
    assert run_rule(values, [], 3) == ({}, 5)
    # a plateau stage with patience 2 opens at eval 4; the count restarts; evals 5-7 -> stop at 7
    stage = StageTrigger(0, "plateau", patience=2)
    assert run_rule(values, [stage], 3) == ({0: 4}, 7)
    # two plateau stages, the second with the early-stopping patience (3): opens at 7, stop only at 8 + 2 more
    second = StageTrigger(1, "plateau")
    assert run_rule([*values, 0.1, 0.1], [stage, second], 3) == ({0: 4, 1: 7}, 10)


def test_a_plateau_stage_waits_for_the_stages_above_it_and_a_closed_fixed_stage_blocks_the_stop():
    values = [0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    fixed = StageTrigger(0, "step", at=5)
    plateau = StageTrigger(1, "plateau", patience=1)
    openings = {0: 5}
    found = {}
    for i in range(len(values)):
        history = list(enumerate(values[: i + 1], start=1))
        decision = decide(history, higher, 2, [fixed, plateau], {**openings, **found})
        if decision.opens is not None:
            found[decision.opens] = history[-1][0]
        if decision.should_stop:
            break
    # evals 2-5 stall but stage 1 waits for stage 0 (opens after step 5); stage 0's opening restarts the count,
    # eval 6 is one stall: stage 1 opens; evals 7 and 8 -> stop at 8
    assert found == {1: 6}
    assert history[-1][0] == 8 and decision.should_stop


class Snapshots(TrainerCallback):
    def __init__(self, model):
        self.model = model
        self.initial = self._copy()
        self.at_epoch_end: list[dict[str, torch.Tensor]] = []

    def _copy(self):
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def on_epoch_end(self, args, state, control, **kwargs):
        self.at_epoch_end.append(self._copy())


def changed(before, after, prefix: str) -> bool:
    names = [n for n in before if n.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(before[n], after[n]) for n in names)


def test_plateau_stages_open_at_the_predicted_evaluation_and_early_stopping_waits_for_the_last(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", epochs=9, lr_scheduler="constant")
    recipe.freeze = [Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")]
    recipe.stages = [
        Stage(on_plateau=True, patience=1, unfreeze=f"{LAYERS}[-2:]"),
        Stage(on_plateau=True, unfreeze=f"{LAYERS}[-3:]"),  # the early-stopping patience, 2
    ]
    recipe.early_stopping = EarlyStopping(metric="rouge_l", patience=2, mode="max")
    ctx = setup_run(recipe)
    plan = (tmp_path / "run" / "freeze_report.txt").read_text()
    assert "stage 0: opens at plateau: 1 evaluations without improvement" in plan
    assert "stage 1: opens at plateau: 2 evaluations without improvement" in plan
    # evaluations at steps 4, 8, ...: 0.5 | 0.4 (1 stall: stage 0 opens at 8) | 0.6 best | 0.5 | 0.55 (2 stalls:
    # stage 1 opens at 20) | 0.5 | 0.5 (2 stalls, no stage left: stop at 28). Without stages: stop at 20.
    values = [0.5, 0.4, 0.6, 0.5, 0.55, 0.5, 0.5, 0.9, 0.9]
    # before training 0.95, above every later value: no plateau counts from it (it would open both stages early)
    ctx.trainer.evaluator = ScriptedEvaluator([{"rouge_l": v} for v in [0.95, *values]])
    assert run_rule(values, [], 2) == ({}, 5)
    snaps = Snapshots(ctx.prepared.model)
    ctx.trainer.add_callback(snaps)
    summary = complete_run(ctx)

    assert summary["stages_opened_at_step"] == {"0": 2 * STEPS_PER_EPOCH, "1": 5 * STEPS_PER_EPOCH}
    assert summary["early_stopping"]["stopped_at_step"] == 7 * STEPS_PER_EPOCH
    assert summary["global_steps"] == 7 * STEPS_PER_EPOCH
    assert [(s["trigger"], s["opened_at_step"], s["opened_at_epoch"]) for s in summary["stages"]] == [
        ("plateau (patience 1)", 8, 2.0),
        ("plateau (patience 2)", 20, 5.0),
    ]
    recorded = {e[OPENED_KEY]: e["step"] for e in ctx.trainer.state.log_history if OPENED_KEY in e}
    assert recorded == {0: 8, 1: 20}
    start, epochs = snaps.initial, snaps.at_epoch_end
    assert not changed(start, epochs[1], f"{LAYERS}.10.")  # closed through epoch 1 (steps 1-8)
    assert changed(epochs[1], epochs[2], f"{LAYERS}.10.")  # trains from step 9
    assert not changed(start, epochs[4], f"{LAYERS}.9.")  # closed through epoch 4 (steps 1-20)
    assert changed(epochs[4], epochs[5], f"{LAYERS}.9.")
    assert not changed(start, epochs[-1], f"{LAYERS}.8.")


class StepLRs(TrainerCallback):
    """Each group's LR when the step starts (after ProgressiveUnfreezing set it), and the weights after it."""

    def __init__(self, model):
        self.model = model
        self.lrs: dict[int, dict[str, float]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs[state.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups}

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = {n: p.detach().clone() for n, p in self.model.named_parameters()}


def test_a_stage_rewarms_its_lr_step_by_step_on_top_of_the_recipes_scheduler(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", epochs=2, lr=1e-3, lr_scheduler="linear")
    recipe.freeze = [Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")]
    recipe.stages = [Stage(step=2, unfreeze=f"{LAYERS}[-2:]", lr_mult=0.5, warmup_steps=3)]
    ctx = setup_run(recipe)
    stage_groups = [ctx.prepared.groups[i].name for i in ctx.prepared.stages[0].group_indices]
    assert stage_groups
    lrs = StepLRs(ctx.prepared.model)
    ctx.trainer.add_callback(lrs)
    summary = complete_run(ctx)
    assert summary["stages_opened_at_step"] == {"0": 2}

    total = 2 * STEPS_PER_EPOCH
    for step in range(total):
        scheduled = (total - step) / total  # linear decay, no warm-up
        ramp = min(1.0, (step - 2) / 3) if step >= 2 else 1.0  # 0, 1/3, 2/3 in the 3 steps after step 2
        for name in stage_groups:
            assert lrs.lrs[step][name] == pytest.approx(5e-4 * scheduled * ramp, rel=1e-12, abs=0), (
                step,
                name,
            )
        others = [n for n in lrs.lrs[step] if n not in stage_groups]
        for name in others:
            declared = next(g.lr for g in ctx.prepared.groups if g.name == name)
            assert lrs.lrs[step][name] == pytest.approx(declared * scheduled, rel=1e-12), (step, name)
    # the first step after the opening runs at LR 0: the stage's weights move only from the next one
    assert not changed(lrs.after[2], lrs.after[3], f"{LAYERS}.10.")
    assert changed(lrs.after[3], lrs.after[4], f"{LAYERS}.10.")
