"""Memory a run will need per device, for `--dry-run`: model state by ZeRO stage, plus activations.

Model state is counted from the prepared model itself (after freezing, LoRA, quantization, stage gates), so
it follows the recipe's freeze / LoRA / QLoRA config exactly:
- params: every unique parameter's storage (4-bit QLoRA weights as their packed bytes);
- grads: one gradient per trainable element in its parameter's dtype (stage-gated parameters count: they get
  zeroed gradients from the start);
- optimizer: AdamW's fp32 `exp_avg` + `exp_avg_sq` per trainable element and one fp32 `step` per trainable
  tensor (torch's AdamW); DeepSpeed with bf16/fp16 adds a fp32 master copy (4 bytes per trainable element)
  and keeps params and grads in 2 bytes.
ZeRO-1 divides the optimizer state by the world size, ZeRO-2 also the grads, ZeRO-3 also the params.
Not counted: buffers, DDP's gradient buckets, the CUDA context and allocator slack, quantization constants.

Activations are measured, not modelled: one forward + backward of the model the run builds on one training
batch (the recipe's per-device batch, image and sequence sizes from its data), summing the bytes of the
tensors autograd saves for backward (each storage once, parameters excluded). That is what backward keeps
alive at its peak; temporaries inside an op come on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trainers.zero3 import param_numel

ADAM_STATE_BYTES = 8  # exp_avg + exp_avg_sq, fp32
STEP_BYTES = 4  # torch AdamW's per-tensor `step` (a float32 scalar tensor)
MASTER_BYTES = 4  # DeepSpeed's fp32 master weights under bf16/fp16


@dataclass
class ModelState:
    """Bytes of one full copy of each part of the model state (before any ZeRO division)."""

    params: int
    grads: int
    optimizer: int
    params_count: int
    trainable_count: int
    trainable_tensors: int


@dataclass
class Activations:
    bytes: int | None
    batch_size: int
    inputs: dict[str, list[int]] = field(default_factory=dict)  # input name -> shape
    note: str = ""


@dataclass
class MemoryPlan:
    state: ModelState
    world_size: int
    zero: int | None
    offload: bool
    optim: str
    precision: str = "fp32"
    activations: Activations | None = None

    def per_device(self, zero: int | None) -> dict[str, int]:
        """Params, grads and optimizer bytes on one device under `zero` (None: DDP, no division)."""
        s, w, z = self.state, self.world_size, zero or 0
        part = {
            "params": s.params // (w if z >= 3 else 1),
            "grads": s.grads // (w if z >= 2 else 1),
            "optimizer": s.optimizer // (w if z >= 1 else 1),
        }
        return {**part, "total": sum(part.values())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_state": asdict(self.state),
            "world_size": self.world_size,
            "zero": self.zero,
            "offload": self.offload,
            "optim": self.optim,
            "precision": self.precision,
            "per_device": {("ddp" if z is None else f"zero{z}"): self.per_device(z) for z in (None, 1, 2, 3)},
            "activations": asdict(self.activations) if self.activations else None,
        }

    def render(self) -> str:
        s = self.state
        lines = [
            f"memory per device ({self.world_size} process(es), {self.precision}; {s.trainable_count:,} of "
            f"{s.params_count:,} params train, in {s.trainable_tensors} tensors; AdamW):"
        ]
        lines.append(f"  {'':<8}" + "".join(f"{k:>14}" for k in ("params", "grads", "optimizer", "total")))
        for z in (None, 1, 2, 3):
            d = self.per_device(z)
            mark = "  <- this recipe" if z == self.zero else ""
            name = "DDP" if z is None else f"ZeRO-{z}"
            lines.append(
                f"  {name:<8}"
                + "".join(f"{_mib(d[k]):>14}" for k in ("params", "grads", "optimizer", "total"))
                + mark
            )
        if self.optim not in ("adamw_torch", "adamw_torch_fused", "adamw_hf"):
            lines.append(f"  (optimizer state counted as AdamW's; the recipe's optim is {self.optim})")
        if self.offload:
            lines.append("  (offload: the optimizer state, and under ZeRO-3 the params, live in CPU memory)")
        a = self.activations
        if a is not None:
            if a.bytes is None:
                lines.append(f"  activations: not measured ({a.note})")
            else:
                shapes = ", ".join(f"{k} {tuple(v)}" for k, v in a.inputs.items())
                lines.append(
                    f"  activations: {_mib(a.bytes)} per device for a batch of {a.batch_size} ({shapes}), "
                    "measured: tensors saved for backward in one forward+backward"
                    + (f" ({a.note})" if a.note else "")
                )
                total = self.per_device(self.zero)["total"] + a.bytes
                lines.append(
                    f"  this recipe: ~{_mib(total)} per device (model state + activations, before "
                    "allocator and framework overhead)"
                )
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in model.parameters():  # deduplicated: tied weights once
        seen.setdefault(id(p), p)
    return list(seen.values())


def model_state(model: nn.Module, deepspeed_half: bool = False) -> ModelState:
    """One copy of params, grads and AdamW state of `model` as it will train (see the module docstring)."""
    params = unique_parameters(model)
    trainable = [p for p in params if p.requires_grad]
    numel = {id(p): param_numel(p) for p in params}  # stored elements (4-bit: packed pairs)
    if deepspeed_half:  # DeepSpeed casts the module to bf16/fp16; floating params then take 2 bytes

        def size(p):
            return 2 if p.is_floating_point() else p.element_size()
    else:

        def size(p):
            return p.element_size()

    trainable_numel = sum(numel[id(p)] for p in trainable)
    optimizer = ADAM_STATE_BYTES * trainable_numel + STEP_BYTES * len(trainable)
    if deepspeed_half:
        optimizer += MASTER_BYTES * trainable_numel
    return ModelState(
        params=sum(numel[id(p)] * size(p) for p in params),
        grads=sum(numel[id(p)] * size(p) for p in trainable),
        optimizer=optimizer,
        params_count=sum(_logical_numel(p) for p in params),
        trainable_count=trainable_numel,
        trainable_tensors=len(trainable),
    )


def _logical_numel(p: nn.Parameter) -> int:
    """Parameters as the model counts them: a 4-bit bitsandbytes weight stores two per byte."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param_numel(p)


def saved_activation_bytes(model: nn.Module, batch: dict[str, Any], loss_fn: Any = None) -> int:
    """Bytes of the tensors autograd saves for backward in one forward + backward (each storage once,
    parameters excluded); the model's weights are left as they were (no optimizer step)."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, batch) if loss_fn is not None else None
            if loss is None:
                loss = model(**batch).loss
        loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sum(storages.values())


MEASURE_FULL_BATCH_UP_TO = (
    50_000_000  # params; a larger model is measured at batch 1 and scaled (linear in batch)
)


def measure_activations(recipe: Any, prepared: Any, task: Any) -> Activations:
    """One training batch of the recipe's data through the prepared model (see the module docstring)."""
    batch_size = recipe.training.batch_size
    model = prepared.model
    if prepared.processor is None or any(p.is_meta for p in model.parameters()):
        return Activations(None, batch_size, note="the model's weights are not available locally")
    if task.missing_data(recipe):
        return Activations(None, batch_size, note="the recipe's data is not found")
    data = task.build(recipe, prepared.processor)
    total = sum(p.numel() for p in unique_parameters(model))
    measured = batch_size if total <= MEASURE_FULL_BATCH_UP_TO else 1
    items = [data.train[i] for i in range(min(measured, len(data.train)))]
    measured = len(items)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.collator(items).items()}
    with torch.random.fork_rng(devices=[]):
        saved = saved_activation_bytes(model, batch, task.compute_loss)
    note = "" if measured == batch_size else f"measured at batch {measured}, scaled to {batch_size}"
    shapes = {k: list(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    return Activations(saved * batch_size // measured, batch_size, shapes, note)


def memory_plan(recipe: Any, prepared: Any, task: Any = None, activations: bool = False) -> MemoryPlan:
    """The recipe's memory per device; `activations` runs the measured forward+backward (dry-run)."""
    launch, t = recipe.launch, recipe.training
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    deepspeed = launch.zero is not None or launch.deepspeed_config is not None
    state = model_state(prepared.model, deepspeed_half=deepspeed and precision in ("bf16", "fp16"))
    plan = MemoryPlan(state, launch.nproc * launch.nnodes, launch.zero, launch.offload, t.optim, precision)
    if activations:
        plan.activations = measure_activations(recipe, prepared, task)
    return plan
