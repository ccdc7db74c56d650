"""Launcher overhead: steady-state training step time of our stack vs a plain `transformers.Trainer`.

Ours is the demo recipe built by `trainers.run.setup_run` (the `RecipeTrainer` with its parameter groups,
global token mean and every callback the run installs: stage gates, metrics log, peak memory, dataset epoch,
early stopping, overfitting watch, world guard; step checkpoints off, as in the demos). The baseline is a
plain `transformers.Trainer` on the same model object, datasets, collator and `TrainingArguments`. The step
time is the interval between consecutive `on_step_end` calls (data loading, forward, backward, optimizer,
every callback's per-step hooks), after a few warm-up steps of each `train()` call and never across an epoch
boundary (evaluation and saving are not steps). Each round runs `train()` of every candidate for a few steps,
in alternating order; the ratio is per round.

Per-callback cost: one more round of ours with every callback hook timed. Gated stages (BLIP): the recipe's
stage parameters trainable-but-gated (grads computed, then zeroed, until their stage) against the same recipe
without stages, where those parameters are truly frozen (`requires_grad=False`).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from benchmarks.common import Goal, Result, Spread, interleaved, main_for, paired_ratios, table
from benchmarks.demo import demo_context, demo_recipe

PER_STEP_HOOKS = (
    "on_step_begin",
    "on_substep_end",
    "on_pre_optimizer_step",
    "on_optimizer_step",
    "on_step_end",
    "on_log",
)


STOCK_CALLBACKS = (
    "DefaultFlowCallback",
    "PrinterCallback",
    "ProgressCallback",
)  # the plain Trainer has them too


class _Enough(Exception):
    """Raised by `StepClock` once it has its steps: ends `train()` before any evaluation or save."""


class StepClock(TrainerCallback):
    """Intervals between consecutive `on_step_end` calls within an epoch, after `warmup` steps."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.times: list[float] = []
        self._last: float | None = None
        self._seen = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.times, self._last, self._seen = [], None, 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._last = None  # the first step of an epoch includes starting the data loader

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None and self._seen > self.warmup:
            self.times.append(now - self._last)
        self._last, self._seen = now, self._seen + 1
        if len(self.times) >= self.steps:
            raise _Enough


def step_time(trainer: Trainer, clock: StepClock) -> float:
    """Median steady-state step time of a few steps of `trainer.train()`."""
    try:
        trainer.train()
    except _Enough:
        pass
    else:
        raise RuntimeError(
            f"training ended after {len(clock.times)} timed steps, {clock.steps} were asked for"
        )
    return statistics.median(clock.times)


def plain_trainer(ctx: Any, clock: StepClock) -> Trainer:
    """A stock Trainer on the run's own model, data, collator and arguments; no callback of ours."""
    return Trainer(
        model=ctx.trainer.model,
        args=ctx.trainer.args,
        train_dataset=ctx.data.train,
        eval_dataset=ctx.data.val,
        data_collator=ctx.data.collator,
        processing_class=ctx.prepared.processor,
        callbacks=[clock],
    )


class HookTimer:
    """Wraps every hook a callback overrides and sums the time spent in it, per callback and hook."""

    def __init__(self, callbacks: list[Any]) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for cb in callbacks:
            if isinstance(cb, StepClock):
                continue
            for hook in dir(TrainerCallback):
                if hook.startswith("on_") and getattr(type(cb), hook) is not getattr(TrainerCallback, hook):
                    setattr(cb, hook, self._wrap(type(cb).__name__, hook, getattr(cb, hook)))

    def _wrap(self, owner: str, hook: str, fn: Any) -> Any:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[owner][hook] += time.perf_counter() - start
                self.calls[owner][hook] += 1

        return timed

    @staticmethod
    def unwrap(callbacks: list[Any]) -> None:
        for cb in callbacks:
            for hook in list(vars(cb)):
                if hook.startswith("on_"):
                    delattr(cb, hook)


def callback_costs(ctx: Any, clock: StepClock, step_seconds: float) -> list[dict[str, Any]]:
    """Per callback: seconds per step in its per-step hooks, and once-per-train() seconds in the others."""
    callbacks = ctx.trainer.callback_handler.callbacks
    timer = HookTimer(callbacks)
    try:
        step_time(ctx.trainer, clock)
    finally:
        HookTimer.unwrap(callbacks)
    steps = clock._seen
    rows = []
    for owner, hooks in sorted(timer.seconds.items()):
        per_step = sum(s for h, s in hooks.items() if h in PER_STEP_HOOKS) / steps
        once = sum(s for h, s in hooks.items() if h not in PER_STEP_HOOKS)
        rows.append(
            {
                "callback": owner,
                "hooks": sorted(hooks),
                "per_step_us": per_step * 1e6,
                "share_of_step": per_step / step_seconds,
                "per_train_call_ms": once * 1e3,
            }
        )
    return rows


def _per_call_us(fn: Any, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def extra_work(ctx: Any, reps: int) -> dict[str, float]:
    """What `RecipeTrainer` does per step beyond the stock Trainer, timed in isolation (µs per step):
    the token count of `get_batch_samples` and the loss rescaling of `compute_loss`."""
    import torch

    from trainers.trainer import count_loss_terms

    trainer = ctx.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    device = trainer.args.device
    ours = _per_call_us(lambda: trainer.get_batch_samples(iter([batch]), 1, device), reps)
    stock = _per_call_us(lambda: Trainer.get_batch_samples(trainer, iter([batch]), 1, device), reps)
    loss, n = torch.tensor(1.0), torch.tensor(100)

    def rescale():
        local = count_loss_terms(batch.get("labels"), trainer.labels_shifted)
        if local is not None:
            return loss * (local.to(loss.device) * trainer.args.world_size / n.to(loss.device))
        return loss

    return {"token_count_us": max(0.0, ours - stock), "loss_rescale_us": _per_call_us(rescale, reps)}


def measure_recipe(key: str, rounds: int, warmup: int, steps: int, gated: bool) -> dict[str, Any]:
    ctx = demo_context(key)
    ours_clock, plain_clock = StepClock(warmup, steps), StepClock(warmup, steps)
    ctx.trainer.add_callback(ours_clock)
    plain = plain_trainer(ctx, plain_clock)
    candidates = {
        "ours": lambda: step_time(ctx.trainer, ours_clock),
        "plain": lambda: step_time(plain, plain_clock),
    }
    frozen_ctx = None
    if gated:
        recipe = demo_recipe(key)
        recipe.stages = []  # the stage layers stay frozen: requires_grad=False, no gate
        frozen_ctx = demo_context(key, recipe=recipe)
        frozen_clock = StepClock(warmup, steps)
        frozen_ctx.trainer.add_callback(frozen_clock)
        candidates["ours_true_freeze"] = lambda: step_time(frozen_ctx.trainer, frozen_clock)
    times = interleaved(candidates, rounds)
    ratio = paired_ratios(times["ours"], times["plain"])
    out: dict[str, Any] = {
        "recipe": key,
        "rounds": rounds,
        "timed_steps_per_round": steps,
        "step_seconds": {k: Spread.of(v) for k, v in times.items()},
        "ours_vs_plain": ratio,
        "callbacks": callback_costs(ctx, ours_clock, statistics.median(times["ours"])),
        "trainable_params": _requires_grad(ctx.trainer.model),
    }
    out["extra_work"] = extra_work(ctx, 200)
    callback_us = sum(c["per_step_us"] for c in out["callbacks"] if c["callback"] not in STOCK_CALLBACKS)
    extra_us = callback_us + sum(out["extra_work"].values())
    out["attributed_extra_us"] = extra_us
    out["attributed_share"] = extra_us * 1e-6 / statistics.median(times["ours"])
    if frozen_ctx is not None:
        out["gated_vs_true_freeze"] = paired_ratios(times["ours"], times["ours_true_freeze"])
        out["gated_params"] = sum(len(p.param_names) for p in ctx.prepared.stages)
        out["trainable_params_true_freeze"] = _requires_grad(frozen_ctx.trainer.model)
    return out


def _requires_grad(model: Any) -> int:
    """Parameters that get gradients (gated stage parameters included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run(smoke: bool, out: Path) -> Result:
    """Launcher overhead: our training step vs a plain transformers.Trainer, and gated stages vs a true freeze."""
    # the plain step on the ViT demo; gated stages vs a true freeze on BLIP's progressive-unfreezing demo
    plans = [("vit_lora", False)] if smoke else [("vit_lora", False), ("blip_progressive", True)]
    rounds, warmup, steps = (2, 1, 2) if smoke else (9, 2, 8)
    blip_steps = 5
    results = [
        measure_recipe(
            key,
            rounds if key == "vit_lora" else 5,
            warmup,
            steps if key == "vit_lora" else blip_steps,
            gated,
        )
        for key, gated in plans
    ]
    goals = [
        Goal(f"{r['recipe']}: our step time / plain Trainer", r["ours_vs_plain"], 1.01, "at_most")
        for r in results
    ]
    lines = []
    for r in results:
        s = r["step_seconds"]
        lines.append(
            f"**{r['recipe']}** demo: median step {s['ours'].median * 1e3:.1f} ms ours, "
            f"{s['plain'].median * 1e3:.1f} ms plain Trainer ({r['rounds']} rounds × "
            f"{r['timed_steps_per_round']} steps)."
        )
        e = r["extra_work"]
        lines.append(
            f"Our per-step extra work, timed in isolation: callbacks of ours "
            f"{r['attributed_extra_us'] - sum(e.values()):.0f} µs, token count {e['token_count_us']:.0f} µs, "
            f"loss rescaling {e['loss_rescale_us']:.0f} µs: {r['attributed_extra_us']:.0f} µs = "
            f"{r['attributed_share']:.3%} of the median step."
        )
        if "gated_vs_true_freeze" in r:
            lines.append(
                f"Gated stage parameters ({r['gated_params']} tensors, trainable {r['trainable_params']:,} "
                f"vs {r['trainable_params_true_freeze']:,} truly frozen): step time ratio gated / true "
                f"freeze {r['gated_vs_true_freeze'].text()}."
            )
        lines += [
            "",
            table(
                ["callback", "hooks", "µs per step", "% of step", "ms per train()"],
                [
                    [
                        c["callback"],
                        ", ".join(c["hooks"]),
                        c["per_step_us"],
                        100 * c["share_of_step"],
                        c["per_train_call_ms"],
                    ]
                    for c in r["callbacks"]
                ],
            ),
            "",
        ]
    return Result(
        "overhead",
        "1. Launcher overhead (training step)",
        smoke,
        goals,
        {"recipes": results},
        "\n".join(lines),
    )


main = main_for(run)

if __name__ == "__main__":
    raise SystemExit(main())
