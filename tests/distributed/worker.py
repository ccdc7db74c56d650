"""One process of a distributed test: runs the tiny staged recipe in several modes back to back and
dumps what this rank really did to `<out>/<run>/facts.rank<N>.json`.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed/worker.py --out DIR --train-json F \
        --modes ddp,zero1,zero2,zero3
    python -m torch.distributed.run --nproc_per_node 2 tests/distributed/worker.py --out DIR --runs runs.json

With `--modes` each mode runs in `<out>/<mode>` with the shared options; with `--runs` each entry names its
folder (`name`), its `mode` and any option of its own (train/val JSON, epochs, patience, eval batch), so the
suites of tests/distributed share one launch (tests/distributed/jobs.py).

Modes: `ddp` (no DeepSpeed), `zero1`, `zero2`, `zero3`, `zero2_offload`, `zero3_offload`; a `+resume` suffix
stops after `--stop-at` steps, then resumes from the last checkpoint in a fresh Trainer; `+accum2` halves the
per-rank batch and accumulates gradients over 2 batches (same global batch); `+plateau` makes the second stage
an `on_plateau=True` stage (patience 1, a 2-step LR re-warm-up) and sets early stopping's min_delta beyond any
score, so no evaluation after the first improves: the stage opens at the second evaluation (step 8, mid-run)
and the run stops two evaluations later. The global batch
is fixed (`--global-batch`), so the per-rank batch is global / world: a 2-rank and a 1-rank run see the same
batches. Per rank and mode it records: world size, DeepSpeed stage, the sample indices iterated each epoch,
batches per epoch, loss and grad norm per step, optimizer-group LRs, a hash of the full (ZeRO-3: gathered)
weights at the start and after every epoch, which frozen parameters changed, the epoch each stage's
parameters first changed, eval metrics and captions, which validation indices the caption scorer received
at each evaluation (rank 0 scores; the others get the broadcast), early stopping and the best checkpoint.
Rank 0 also saves the weights after each epoch (`epoch<N>.safetensors`) for comparisons across runs.

Evaluation scores METEOR, ROUGE-L and CIDEr-D, and early stopping watches their mean (the shipped recipes'
`val_score`), so the stop is decided by real caption scores computed on rank 0 and broadcast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))

from trainers.lazy_imports import keep_out_bitsandbytes  # noqa: E402

keep_out_bitsandbytes()  # nothing here quantizes: ~2.5 s less per process, as launch.py does

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import trainers.tasks.captioning.baseline as caption_baseline  # noqa: E402
import trainers.tasks.captioning.scoring as caption_evaluation  # noqa: E402
from trainers.distributed import WorldGuard, finish_distributed  # noqa: E402
from trainers.metrics.captions import CaptionScorer  # noqa: E402
from trainers.models.blip import TinyBlipSpec  # noqa: E402
from trainers.recipe import (  # noqa: E402
    CaptionData,
    EarlyStopping,
    Evaluation,
    Freeze,
    Model,
    ParamGroup,
    Recipe,
    Reporting,
    Stage,
    Training,
    Unfreeze,
    mean,
)
from trainers.run import complete_run, setup_run  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "distributed"))
from reset import reset_between_runs  # noqa: E402

SHAPES = ROOT / "data" / "shapes"
LAYERS = "vision_model.encoder.layers"
STAGE_EPOCHS = (1, 2)
PLATEAU_MIN_DELTA = (
    1e3  # `+plateau`: no score improves by this much, so every evaluation after the first stalls
)
ZERO = {
    "ddp": (None, False),
    "zero1": (1, False),
    "zero2": (2, False),
    "zero3": (3, False),
    "zero2_offload": (2, True),
    "zero3_offload": (3, True),
}
METRICS = ("meteor", "rouge_l", "cider_d")
SCORED: list[
    list[int]
] = []  # validation indices given to the caption scorer, one list per call (this process)


def _recording_score(score):
    def score_and_record(self, predictions, references):
        SCORED.append(sorted(int(k) for k in predictions))
        return score(self, predictions, references)

    return score_and_record


CaptionScorer.score = _recording_score(CaptionScorer.score)


def _unrecorded(baseline):
    """The constant-caption baseline (scored once per run, with the same scorer) is not a model evaluation."""

    def constant_caption_baseline(*args, **kwargs):
        mark = len(SCORED)
        try:
            return baseline(*args, **kwargs)
        finally:
            del SCORED[mark:]

    return constant_caption_baseline


caption_evaluation.constant_caption_baseline = _unrecorded(caption_evaluation.constant_caption_baseline)
caption_baseline.constant_caption_baseline = _unrecorded(
    caption_baseline.constant_caption_baseline
)  # the plan's
_SHARED_SCORER: list[CaptionScorer] = []


def shared_scorer() -> CaptionScorer:
    """One scorer (one METEOR java process, seconds to start) for every mode this process runs."""
    if not _SHARED_SCORER:
        scorer = CaptionScorer(METRICS)
        scorer.close = lambda: None  # the runs' evaluators close their scorer at the end; this one lives on
        _SHARED_SCORER.append(scorer)
    return _SHARED_SCORER[0]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_recipe(
    out: Path,
    mode: str,
    train_json: str,
    val_json: str,
    global_batch: int,
    epochs: int,
    patience: int,
    eval_batch: int = 4,
    name: str | None = None,
    logging_steps: int = 1,
) -> Recipe:
    zero, offload = ZERO[mode.split("+")[0]]
    accum = 2 if "+accum2" in mode else 1
    plateau = "+plateau" in mode
    if global_batch % (world() * accum):
        raise SystemExit(
            f"global batch {global_batch} is not divisible by {world()} ranks x {accum} accumulation"
        )
    recipe = Recipe(
        name=f"dist_{mode}",
        model=Model(
            id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True
        ),  # dropout 0: ranks can match exactly
        data=CaptionData(
            train=train_json,
            val=val_json,
            images=str(SHAPES / "images"),
            max_train_samples=32,
            max_val_samples=None,
        ),
        freeze=[Freeze("vision_model"), Unfreeze(f"{LAYERS}[-1:]")],
        stages=[
            Stage(epoch=STAGE_EPOCHS[0], unfreeze=f"{LAYERS}[-2:]"),
            Stage(on_plateau=True, patience=1, unfreeze=f"{LAYERS}[-3:]", lr_mult=0.5, warmup_steps=2)
            if plateau
            else Stage(epoch=STAGE_EPOCHS[1], unfreeze=f"{LAYERS}[-3:]", lr_mult=0.5),
        ],
        param_groups=[
            ParamGroup("vision", match=r"^vision_model\.", lr_mult=0.1),
            ParamGroup("text", match=r"^text_decoder\.", lr_mult=1.0),
        ],
        training=Training(
            epochs=epochs,
            batch_size=global_batch // (world() * accum),
            grad_accum=accum,
            lr=1e-3,
            warmup_steps=0,
            weight_decay=0.01,
            max_grad_norm=1.0,
            logging_steps=logging_steps,
            resume="never",
            save_total_limit=2,
            seed=42,
            num_workers=0,  # RecordingDataset records in this process
        ),
        evaluation=Evaluation(metrics=METRICS, num_beams=2, max_length=12, batch_size=eval_batch),
        early_stopping=EarlyStopping(
            metric=mean(*METRICS),
            mode="max",
            patience=patience,
            min_delta=PLATEAU_MIN_DELTA if plateau else 0.0,
        ),
        reporting=Reporting(wandb=False, plots=False),
        output_dir=str(out / (name or mode)),
    )
    recipe.launch.zero = zero
    recipe.launch.offload = offload
    recipe.validate()
    return recipe


class RecordingDataset(torch.utils.data.Dataset):
    """The train dataset, remembering which indices this rank fetched (num_workers=0: same process)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.inner[index]


def full_weights(model) -> dict[str, torch.Tensor]:
    """Every parameter, complete on every rank (ZeRO-3 parameters are gathered: a collective)."""
    params = list(model.named_parameters())
    partitioned = [p for _, p in params if hasattr(p, "ds_id")]
    context = contextlib.nullcontext()
    if partitioned:
        import deepspeed

        context = deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)
    with context:
        return {n: p.detach().clone().float().cpu() for n, p in params}


def digest(weights: dict[str, torch.Tensor], names=None) -> str:
    h = hashlib.sha256()
    for name in sorted(names if names is not None else weights):
        h.update(name.encode())
        h.update(weights[name].contiguous().numpy().tobytes())
    return h.hexdigest()


class Recorder(TrainerCallback):
    def __init__(self, trainer, dataset: RecordingDataset) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.start: dict[str, torch.Tensor] | None = None
        self.epochs: list[dict[str, torch.Tensor]] = []
        self.indices: list[list[int]] = []
        self.lrs_by_step: dict[int, dict[str, float]] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.start is None and state.global_step == 0:
            self.start = full_weights(model)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.seen.clear()

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        from trainers.optim.state import base_optimizer

        groups = base_optimizer(optimizer).param_groups
        self.lrs_by_step[state.global_step] = {g["name"]: g["lr"] for g in groups}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.indices.append(list(self.dataset.seen))
        self.epochs.append(full_weights(model))


def run_mode(run: argparse.Namespace, out: Path) -> None:
    """One run (`run.name`: its folder under `out`; `run.mode`: how it trains; its own data and schedule)."""
    started = time.time()
    mode = run.mode
    recipe = build_recipe(
        out,
        mode,
        run.train_json,
        run.val_json,
        run.global_batch,
        run.epochs,
        run.patience,
        run.eval_batch,
        name=run.name,
        logging_steps=run.logging_steps,
    )
    SCORED.clear()
    recorder, summary, resumed_from = None, None, None
    legs = ["first", "resume"] if mode.endswith("+resume") else ["only"]
    for leg in legs:
        if leg == "resume":
            recipe.training.resume = "auto"
        ctx = setup_run(recipe)
        model = ctx.prepared.model
        if leg != "resume":
            partitioned_at_load = all(hasattr(p, "ds_id") for p in model.parameters())
        frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
        dataset = RecordingDataset(ctx.trainer.train_dataset)
        ctx.trainer.train_dataset = dataset
        if recorder is None:
            recorder = Recorder(ctx.trainer, dataset)
        else:  # keep the snapshots of the first leg; record the resumed epochs after them
            recorder.trainer, recorder.dataset = ctx.trainer, dataset
        ctx.trainer.add_callback(recorder)
        ctx.trainer.evaluator.task._scorer = shared_scorer()
        if leg == "first":
            ctx.trainer.add_callback(StopAt(run.stop_at))
        else:
            resumed_from = ctx.resume_from
        summary = complete_run(ctx)
        guard = next(c for c in ctx.trainer.callback_handler.callbacks if isinstance(c, WorldGuard))
        trainer = ctx.trainer
    final = full_weights(trainer.model)
    start = recorder.start
    changed_frozen = [n for n in frozen if not torch.equal(start[n], final[n])]
    stage_first_change = {}
    for plan in ctx.prepared.stages:
        first = None
        for epoch, snap in enumerate(recorder.epochs):
            if any(not torch.equal(start[n], snap[n]) for n in plan.param_names):
                first = epoch
                break
        stage_first_change[str(plan.index)] = first
    history = trainer.state.log_history
    facts = {
        "mode": mode,
        "rank": rank(),
        "world_size": world(),
        "trainer_world_size": trainer.args.world_size,
        "process_index": trainer.args.process_index,
        "deepspeed": bool(trainer.is_deepspeed_enabled),
        "rank_facts": guard.facts.__dict__ if guard.facts else None,
        "indices_per_epoch": recorder.indices,
        "losses": {str(e["step"]): e["loss"] for e in history if "loss" in e},
        "grad_norms": {str(e["step"]): float(e["grad_norm"]) for e in history if "grad_norm" in e},
        "eval": [
            {k: v for k, v in e.items() if k.startswith("eval_") or k in ("step", "epoch")}
            for e in history
            if "eval_loss" in e
        ],
        "predictions": {str(k): v for k, v in (trainer.evaluator.last_predictions or {}).items()},
        "scored_indices": list(SCORED),
        "lrs_by_step": {str(k): v for k, v in recorder.lrs_by_step.items()},
        "declared_lrs": {g.name: g.lr for g in ctx.prepared.groups},
        "stage_epochs": {str(p.index): p.epoch for p in ctx.prepared.stages},
        "stage_group_names": {
            str(p.index): [ctx.prepared.groups[i].name for i in p.group_indices] for p in ctx.prepared.stages
        },
        "stages_opened_at_step": summary["stages_opened_at_step"],
        "stages": summary["stages"],
        "stage_first_change_epoch": stage_first_change,
        "stage_state_entries_reset": {
            str(k): v
            for k, v in next(
                c for c in trainer.callback_handler.callbacks if type(c).__name__ == "ProgressiveUnfreezing"
            ).state_entries_reset.items()
        },
        "frozen_tensors": len(frozen),
        "params": summary["params"],  # the freeze report's counts (ZeRO-3: from ds_numel)
        "held_at_load": ctx.held_at_load,  # elements this rank held after loading (ZeRO-3: its shard)
        "partitioned_at_load": partitioned_at_load,
        "param_tensors": len(list(model.parameters())),
        "frozen_changed": changed_frozen,
        "start_hash": digest(start),
        "epoch_hashes": [digest(s) for s in recorder.epochs],
        "final_hash": digest(final),
        "global_step": trainer.state.global_step,
        "early_stopping": summary["early_stopping"],
        "best_checkpoint": summary["best_checkpoint"],
        "resumed_from": resumed_from,
        "seconds": time.time() - started,
    }
    if mode.endswith("+resume"):
        facts["first_leg_epochs"] = len(recorder.epochs)
    target = out / run.name
    if rank() == 0:
        from safetensors.torch import load_file, save_file

        for epoch, snap in enumerate(recorder.epochs):
            save_file(snap, str(target / f"epoch{epoch}.safetensors"))
        # transformers 5 saves a model that from_pretrained loaded (ZeRO-3 loads the demo model that way) with
        # the checkpoint format's own names: BERT's LayerNorms as `.gamma` / `.beta`; from_pretrained maps them back
        saved = {_loaded_name(k): v for k, v in load_file(str(target / "best" / "model.safetensors")).items()}
        common = sorted(set(saved) & set(final))
        facts["best_saved_tensors"] = len(saved)
        facts["best_saved_matches_final"] = all(torch.equal(saved[n].float(), final[n]) for n in common)
        facts["best_saved_missing"] = sorted(set(final) - set(saved))
        best_step = int(Path(summary["best_checkpoint"]).name.split("-")[-1])
        steps_per_epoch = -(-guard.facts.batches_per_epoch // recipe.training.grad_accum)
        facts["best_epoch"] = best_step // steps_per_epoch - 1
        facts["best_loaded_is_best_epoch"] = facts["final_hash"] == facts["epoch_hashes"][facts["best_epoch"]]
    (target / f"facts.rank{rank()}.json").write_text(json.dumps(facts, indent=1) + "\n")
    del ctx, trainer, model, recorder
    reset_between_runs()


def _loaded_name(key: str) -> str:
    """A saved tensor's name as the loaded model has it (legacy LayerNorm `gamma`/`beta` → `weight`/`bias`)."""
    for legacy, current in ((".gamma", ".weight"), (".beta", ".bias")):
        if key.endswith(legacy) and "LayerNorm" in key:
            return key[: -len(legacy)] + current
    return key


class StopAt(TrainerCallback):
    """Interrupts the first leg of a `+resume` mode after `step` (a checkpoint exists there)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if self.step and state.global_step >= self.step:
            control.should_training_stop = True


def runs_of(args: argparse.Namespace) -> list[argparse.Namespace]:
    """`--modes a,b` (one folder per mode, shared options) or `--runs FILE` (each run its own options)."""
    defaults = {k: v for k, v in vars(args).items() if k not in ("runs", "modes", "out")}
    if args.runs:
        return [argparse.Namespace(**{**defaults, **run}) for run in json.loads(Path(args.runs).read_text())]
    return [argparse.Namespace(**defaults, name=mode, mode=mode) for mode in args.modes.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-json")
    parser.add_argument("--val-json", default=str(SHAPES / "val.json"))
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--modes", help="comma-separated modes, each run with the options below")
    parser.add_argument("--runs", help="a JSON list of runs, each a dict of these options plus name and mode")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--logging-steps", type=int, default=1, help="a loss line every N steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    for run in runs_of(args):
        run_mode(run, out)
    for scorer in _SHARED_SCORER:
        CaptionScorer.close(scorer)
    finish_distributed()


if __name__ == "__main__":
    main()
