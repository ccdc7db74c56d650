"""The smallest useful run for the Slurm tests: tiny BLIP, 24 shapes images, 2 epochs, ROUGE-L only.

With 2 ranks x batch 4 an epoch is 3 steps, so a preemption can land mid-epoch. Two test-only callbacks:
`RankRecord` writes what each rank saw and its final weights; `PauseForSignal` holds rank 0 at one
step of the first run until the preemption signal arrived, so the test knows which step gets saved.
"""

import hashlib
import json
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from trainers.callbacks import preemption
from trainers.models.blip import TinyBlipSpec
from trainers.recipe import CaptionData, Evaluation, Model, Recipe, Reporting, Training

SHAPES = Path(__file__).resolve().parents[2] / "data" / "shapes"


class RankRecord(TrainerCallback):
    """Per rank: world size, a fingerprint of every training sample per epoch, a hash of the final weights."""

    def __init__(self):
        self.samples: list[list] = []
        self.epoch = 0
        self.hooked = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and not self.hooked:
            model.register_forward_pre_hook(self._record, with_kwargs=True)
            self.hooked = True

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch = int(round(state.epoch or 0))

    def _record(self, module, args, kwargs):
        pixels = kwargs.get("pixel_values")
        if module.training and pixels is not None:
            self.samples += [[self.epoch, f"{float(p.double().sum()):.4f}"] for p in pixels]

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import torch.distributed as dist
        from safetensors.torch import save_file

        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        digest = hashlib.sha256()
        for k in sorted(tensors):
            digest.update(k.encode() + tensors[k].numpy().tobytes())
        out = Path(args.output_dir).parent / "test_ranks"  # ranks/ holds the launcher's own per-rank facts
        out.mkdir(exist_ok=True)
        record = {
            "rank": rank,
            "world_size": world,
            "args_world_size": args.world_size,
            "global_step": state.global_step,
            "node": os.environ.get("SLURMD_NODENAME"),
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "weights_sha256": digest.hexdigest(),
            "samples": self.samples,
        }
        (out / f"rank{rank}.json").write_text(json.dumps(record))
        if rank == 0:
            # tied weights share storage: keep one name per tensor
            seen, unique = set(), {}
            for k, v in model.state_dict().items():
                if v.data_ptr() not in seen:
                    seen.add(v.data_ptr())
                    unique[k] = v.detach().cpu().contiguous()
            save_file(unique, str(out / "final_weights.safetensors"))


class PauseForSignal(TrainerCallback):
    """First run only, rank 0: at step $SLURM_TEST_PAUSE_AT, mark `paused` and wait for SIGUSR1 (60 s max)."""

    def on_step_end(self, args, state, control, **kwargs):
        at = int(os.environ.get("SLURM_TEST_PAUSE_AT", "0"))
        first_run = int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0
        if not (at and first_run and state.global_step == at and state.is_world_process_zero):
            return control
        (Path(args.output_dir).parent / "paused").write_text(str(state.global_step))
        deadline = time.monotonic() + 60
        while not preemption.signal_received() and time.monotonic() < deadline:
            time.sleep(0.05)
        return control


recipe = Recipe(
    name="tiny_slurm",
    model=Model(id="tiny", family="blip", demo=TinyBlipSpec(), use_demo_model=True),
    data=CaptionData(
        train=str(SHAPES / "train.json"),
        val=str(SHAPES / "val.json"),
        images=str(SHAPES / "images"),
        max_train_samples=24,
        max_val_samples=4,
        max_length=16,
    ),
    training=Training(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        warmup_steps=0,
        weight_decay=0.01,
        logging_steps=1,
        save_total_limit=3,
    ),
    evaluation=Evaluation(metrics=("rouge_l",), num_beams=1, max_length=8, batch_size=4),
    reporting=Reporting(wandb=False, plots=False),
    callbacks=[RankRecord(), PauseForSignal()],
)
