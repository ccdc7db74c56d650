"""Memory a run will need per device, for `--dry-run`: model state by ZeRO stage, plus activations.

Model state is counted from the prepared model itself (after freezing, LoRA, quantization, stage gates), so
it follows the recipe's freeze / LoRA / QLoRA config exactly:
- params: every unique parameter's storage (4-bit QLoRA weights as their packed bytes);
- grads: one gradient per trainable element in its parameter's dtype (stage-gated parameters count: they get
  zeroed gradients from the start);
- optimizer: by `training.optim`. AdamW (`adamw_torch`, `adamw_torch_fused`): fp32 `exp_avg` + `exp_avg_sq`
  per trainable element and one fp32 `step` per trainable tensor. bitsandbytes' 8-bit AdamW
  (`adamw_bnb_8bit`, `adamw_8bit`, `paged_adamw_8bit`; bitsandbytes 0.50): one byte per moment and element,
  fp32 block maxima per 256 elements and two 256-entry fp32 quantization maps per tensor; tensors under 4096
  elements keep fp32 moments. `sgd` (the Trainer's, no momentum): nothing. Others are counted as AdamW
  and the plan says so. DeepSpeed with bf16/fp16 adds a fp32 master copy and the fp32 gradient partition
  its optimizer steps on (4 + 4 bytes per trainable element) and keeps params and grads in 2 bytes.
ZeRO-1 divides the optimizer state by the world size, ZeRO-2 also the grads, ZeRO-3 also the params, and
ZeRO-3 gathers one layer's full parameters at a time to compute it: the plan adds the largest module's own
parameters (DeepSpeed's estimator does the same). Offload (`--offload`, or `offload_optimizer` /
`offload_param` in a `--deepspeed FILE`, which the plan reads) moves the optimizer state (and the gradient
partition) to CPU memory, and under ZeRO-3 also the params; the device keeps the gathered layer.
FSDP2 (`launch.engine=fsdp`, full shard) divides params, grads and optimizer state by the world size like
ZeRO-3, and gathers whole wrapped blocks (`trainers.fsdp.wrap_classes`) in the compute dtype (bf16 under
bf16 mixed precision): the plan adds the root group (everything outside the wrapped blocks, gathered for the
whole step: FSDP2 does not reshard the root after forward) and two of the largest block (the one computing
and the next, which FSDP2 gathers ahead).
Not counted: buffers, DDP's gradient buckets, DeepSpeed's communication buckets and prefetch beyond one
layer, the CUDA context and allocator slack, quantization constants.

Activations are measured, not modelled: one forward + backward of the model the run builds on one training
batch (the recipe's per-device batch, image and sequence sizes from its data), summing the bytes of the
tensors autograd saves for backward (each storage once, parameters excluded). That is what backward keeps
alive at its peak; temporaries inside an op come on top. With gradient checkpointing the same pass
attributes each saved tensor to the checkpointed layer that saved it: what backward keeps is then what is
saved outside those layers, plus each layer's inputs (checkpointing keeps them), plus the largest single
layer's saved tensors (recomputed one layer at a time in backward).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trainers.zero3 import param_numel

ADAM_STATE_BYTES = 8  # exp_avg + exp_avg_sq, fp32
STEP_BYTES = 4  # torch AdamW's per-tensor `step` (a float32 scalar tensor)
MASTER_BYTES = 4  # DeepSpeed's fp32 master weights under bf16/fp16
FP32_GRAD_BYTES = 4  # DeepSpeed's fp32 gradient partition the optimizer steps on under bf16/fp16
ADAMW = ("adamw_torch", "adamw_torch_fused", "adamw_hf")
ADAMW_8BIT = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit")
NO_STATE = ("sgd",)
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes: smaller tensors keep 32-bit state
BNB_BLOCK = 256  # elements per fp32 block maximum
BNB_QMAP_BYTES = 2 * 256 * 4  # qmap1 + qmap2, fp32, per tensor


def optimizer_state_bytes(optim: str, numels: list[int]) -> int:
    """Bytes of `optim`'s state for trainable tensors of these sizes (see the module docstring)."""
    if optim in NO_STATE:
        return 0
    if optim in ADAMW_8BIT:
        total = 0
        for n in numels:
            if n < BNB_MIN_8BIT_SIZE:
                total += ADAM_STATE_BYTES * n
            else:
                total += 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCK) + BNB_QMAP_BYTES
        return total
    return ADAM_STATE_BYTES * sum(numels) + STEP_BYTES * len(numels)


@dataclass
class ModelState:
    """Bytes of one full copy of each part of the model state (before any ZeRO division)."""

    params: int
    grads: int
    optimizer: int
    params_count: int
    trainable_count: int
    trainable_tensors: int
    largest_layer_params: int = 0  # the largest module's own parameters (ZeRO-3 gathers one at a time)
    largest_layer_bytes: int = 0


@dataclass
class FsdpGroups:
    """What FSDP2 gathers, in bytes of its compute dtype: the root group and the largest wrapped block."""

    root_bytes: int
    largest_block_bytes: int
    blocks: int

    @property
    def gathered(self) -> int:
        return self.root_bytes + 2 * self.largest_block_bytes


@dataclass
class Activations:
    bytes: int | None
    batch_size: int
    inputs: dict[str, list[int]] = field(default_factory=dict)  # input name -> shape
    note: str = ""
    without_checkpointing: int | None = None  # with gradient checkpointing on: the bytes it would be without


@dataclass
class MemoryPlan:
    state: ModelState
    world_size: int
    zero: int | None
    offload: bool
    optim: str
    precision: str = "fp32"
    activations: Activations | None = None
    offload_params: bool = False  # ZeRO-3 params on CPU (a --deepspeed file may offload only the optimizer)
    deepspeed_file: str | None = None  # the config the stage and offload were read from
    fsdp: FsdpGroups | None = None  # set when the recipe trains under FSDP2 (launch.engine=fsdp)

    def per_device(
        self, zero: int | None, offload: bool = False, offload_params: bool | None = None
    ) -> dict[str, int]:
        """Device bytes of params, grads, optimizer state and ZeRO-3's gathered layer under `zero` (None:
        DDP, no division); `host`: what offload keeps in CPU memory instead."""
        s, w, z = self.state, self.world_size, zero or 0
        offload_params = (offload and z >= 3) if offload_params is None else offload_params and z >= 3
        part = {
            "params": s.params // (w if z >= 3 else 1),
            "grads": s.grads // (w if z >= 2 else 1),
            "optimizer": s.optimizer // (w if z >= 1 else 1),
            "gathered": s.largest_layer_bytes if z >= 3 else 0,
        }
        host = 0
        if offload and z >= 2:  # the optimizer steps on CPU: its state and the gradient partition live there
            host += part["optimizer"] + part["grads"]
            part["optimizer"] = part["grads"] = 0
        if offload_params:
            host += part["params"]
            part["params"] = 0
        return {**part, "total": sum(part.values()), "host": host}

    def per_device_fsdp(self) -> dict[str, int]:
        """Device bytes under FSDP2 full shard: every part divided, plus the blocks gathered at once."""
        s, w = self.state, self.world_size
        part = {
            "params": s.params // w,
            "grads": s.grads // w,
            "optimizer": s.optimizer // w,
            "gathered": self.fsdp.gathered if self.fsdp else 0,
        }
        return {**part, "total": sum(part.values()), "host": 0}

    @property
    def under_fsdp(self) -> bool:
        return self.fsdp is not None and self.world_size > 1  # one process trains without FSDP

    def this_recipe(self) -> dict[str, int]:
        if self.under_fsdp:
            return self.per_device_fsdp()
        return self.per_device(self.zero, self.offload, self.offload_params)

    def to_dict(self) -> dict[str, Any]:
        rows = {("ddp" if z is None else f"zero{z}"): self.per_device(z) for z in (None, 1, 2, 3)}
        if self.fsdp is not None:
            rows["fsdp2"] = self.per_device_fsdp()
        return {
            "model_state": asdict(self.state),
            "world_size": self.world_size,
            "zero": self.zero,
            "offload": self.offload,
            "offload_params": self.offload_params,
            "deepspeed_file": self.deepspeed_file,
            "optim": self.optim,
            "precision": self.precision,
            "per_device": rows,
            "fsdp": asdict(self.fsdp) if self.fsdp else None,
            "this_recipe": self.this_recipe(),
            "activations": asdict(self.activations) if self.activations else None,
        }

    def render(self) -> str:
        s = self.state
        source = f" read from {self.deepspeed_file}" if self.deepspeed_file else ""
        lines = [
            f"memory per device ({self.world_size} process(es), {self.precision}; {s.trainable_count:,} of "
            f"{s.params_count:,} params train, in {s.trainable_tensors} tensors; {self.optim}{source}):"
        ]
        columns = ("params", "grads", "optimizer", "gathered", "total", "host")
        lines.append(f"  {'':<10}" + "".join(f"{k:>14}" for k in columns))
        rows: list[tuple[str, dict[str, int], bool]] = []
        for z in (None, 1, 2, 3):
            name = "DDP" if z is None else f"ZeRO-{z}"
            rows.append(
                (name, self.per_device(z), z == self.zero and not self.offload and not self.under_fsdp)
            )
        if self.offload:
            rows.append((f"ZeRO-{self.zero}+off", self.this_recipe(), True))
        if self.fsdp is not None:
            rows.append(("FSDP2", self.per_device_fsdp(), self.under_fsdp))
        for name, d, mine in rows:
            lines.append(
                f"  {name:<10}"
                + "".join(f"{_mib(d[k]):>14}" for k in columns)
                + ("  <- this recipe" if mine else "")
            )
        if self.optim not in ADAMW + ADAMW_8BIT + NO_STATE:
            lines.append(f"  (optimizer state counted as AdamW's; the recipe's optim is {self.optim})")
        if self.offload:
            what = "the optimizer state and gradient partition" + (
                ", and the params" if self.offload_params else ""
            )
            lines.append(f"  (offload: {what} live in CPU memory: the host column)")
        if self.fsdp is not None:
            f = self.fsdp
            lines.append(
                f"  (FSDP2 gathers the root group, {_mib(f.root_bytes)}, for the whole step and two of its "
                f"{f.blocks} wrapped blocks at a time, the largest {_mib(f.largest_block_bytes)})"
            )
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
                if a.without_checkpointing is not None:
                    lines.append(
                        f"  gradient checkpointing: {_mib(a.bytes)} instead of {_mib(a.without_checkpointing)} "
                        f"({a.bytes / a.without_checkpointing:.2f}x)"
                    )
                total = self.this_recipe()["total"] + a.bytes
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


def model_state(model: nn.Module, deepspeed_half: bool = False, optim: str = "adamw_torch") -> ModelState:
    """One copy of params, grads and optimizer state of `model` as it will train (see the module docstring)."""
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
    optimizer = optimizer_state_bytes(optim, [numel[id(p)] for p in trainable])
    if deepspeed_half:
        optimizer += (MASTER_BYTES + FP32_GRAD_BYTES) * trainable_numel
    largest = max(
        (
            [p for p in module.parameters(recurse=False)]
            for module in model.modules()
            if any(True for _ in module.parameters(recurse=False))
        ),
        key=lambda ps: sum(_logical_numel(p) for p in ps),
        default=[],
    )
    return ModelState(
        params=sum(numel[id(p)] * size(p) for p in params),
        grads=sum(numel[id(p)] * size(p) for p in trainable),
        optimizer=optimizer,
        params_count=sum(_logical_numel(p) for p in params),
        trainable_count=trainable_numel,
        trainable_tensors=len(trainable),
        largest_layer_params=sum(_logical_numel(p) for p in largest),
        largest_layer_bytes=sum(numel[id(p)] * size(p) for p in largest if id(p) in numel),
    )


def _logical_numel(p: nn.Parameter) -> int:
    """Parameters as the model counts them: a 4-bit bitsandbytes weight stores two per byte."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param_numel(p)


def saved_activation_bytes(model: nn.Module, batch: dict[str, Any], loss_fn: Any = None) -> int:
    """Bytes of the tensors autograd saves for backward in one forward + backward (each storage once,
    parameters excluded); the model's weights are left as they were (no optimizer step)."""
    return activation_profile(model, batch, loss_fn).peak


@dataclass
class ActivationProfile:
    """Saved-for-backward bytes of one forward + backward, split by the checkpointed layers."""

    outside: int  # saved outside every checkpointed layer
    inside: list[int]  # saved inside each checkpointed layer
    layer_inputs: int  # the checkpointed layers' tensor inputs not already counted outside

    @property
    def without_checkpointing(self) -> int:
        return self.outside + sum(self.inside)

    @property
    def with_checkpointing(self) -> int:
        return self.outside + self.layer_inputs + max(self.inside, default=0)

    @property
    def peak(self) -> int:
        return self.with_checkpointing if self.inside else self.without_checkpointing


def activation_profile(model: nn.Module, batch: dict[str, Any], loss_fn: Any = None) -> ActivationProfile:
    """One forward + backward with checkpointing paused, each saved storage attributed to the checkpointed
    layer that saved it (or to none); weights are left as they were."""
    from trainers.models.checkpointing import checkpointed_layers

    layers = checkpointed_layers(model)
    param_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    owner: dict[int, tuple[int, int]] = {}  # storage -> (layer index or -1, bytes)
    inputs: dict[int, int] = {}
    # storages are keyed by address: a tensor freed mid-forward (a layer input nothing saves, a saved tensor of a
    # branch the loss drops) could lend its address to a later storage and be miscounted, so every counted
    # tensor is held until the count is done
    held: list[torch.Tensor] = []
    current: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in param_storages:
            owner.setdefault(storage._cdata, (current[-1] if current else -1, storage.nbytes()))
            held.append(t)
        return t

    def enter(index: int):
        def hook(_module, args, kwargs):
            if not current:
                for value in (*args, *kwargs.values()):
                    if torch.is_tensor(value) and value.untyped_storage()._cdata not in param_storages:
                        inputs.setdefault(value.untyped_storage()._cdata, value.untyped_storage().nbytes())
                        held.append(value)
            current.append(index)

        return hook

    def leave(_module, _args, _output):
        current.pop()

    handles = []
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = False
        handles.append(layer.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(leave))
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, batch) if loss_fn is not None else None
            if loss is None:
                loss = model(**batch).loss
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        for layer in layers:
            layer.gradient_checkpointing = True
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    inside = [0] * len(layers)
    outside = 0
    for index, nbytes in owner.values():
        if index < 0:
            outside += nbytes
        else:
            inside[index] += nbytes
    kept = sum(n for ptr, n in inputs.items() if owner.get(ptr, (0, 0))[0] >= 0 or ptr not in owner)
    held.clear()
    return ActivationProfile(outside, inside, kept)


MEASURE_FULL_BATCH_UP_TO = (
    50_000_000  # params; a larger model is measured at batch 1 and scaled (linear in batch)
)


def measure_activations(recipe: Any, prepared: Any, task: Any, precision: str = "fp32") -> Activations:
    """One training batch of the recipe's data through the prepared model (see the module docstring)."""
    batch_size = recipe.training.batch_size
    model = prepared.model
    if prepared.processor is None or any(p.is_meta for p in model.parameters()):
        return _measure_on_meta(recipe, model, precision)
    if task.missing_data(recipe):
        return Activations(None, batch_size, note="the recipe's data is not found")
    data = task.build(recipe, prepared.processor)
    total = sum(p.numel() for p in unique_parameters(model))
    measured = batch_size if total <= MEASURE_FULL_BATCH_UP_TO else 1
    items = [data.train[i] for i in range(min(measured, len(data.train)))]
    measured = len(items)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.collator(items).items()}
    with torch.random.fork_rng(devices=[]), _autocast(precision):
        profile = activation_profile(model, batch, task.compute_loss)
    note = "" if measured == batch_size else f"measured at batch {measured}, scaled to {batch_size}"
    if precision in ("bf16", "fp16"):
        note = "; ".join(filter(None, [note, f"under {precision} autocast"]))
    shapes = {k: list(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    without = profile.without_checkpointing * batch_size // measured if profile.inside else None
    return Activations(profile.peak * batch_size // measured, batch_size, shapes, note, without)


def _measure_on_meta(recipe: Any, model: nn.Module, precision: str) -> Activations:
    """The real-size model without its weights: the same count on meta tensors (`meta_activations`)."""
    from trainers.reporting.meta_activations import meta_batch, meta_loss

    batch_size = recipe.training.batch_size
    why = "the model's weights are not available locally, and a forward on the meta device failed"
    try:
        batch, loss = meta_batch(model, recipe)
        with _autocast(precision, "cpu"):
            profile = activation_profile(model, batch, meta_loss)
    except Exception as error:  # a data-dependent check or a loss outside torch: say which, count no bytes
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        return Activations(None, batch_size, note=f"{why}: {reason}")
    notes = [
        "measured on the meta device (weights not local; inputs from the model's config)",
        f"loss: {loss}",
    ]
    if precision in ("bf16", "fp16"):
        notes.append(f"under {precision} autocast")
    shapes = {k: list(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
    without = profile.without_checkpointing if profile.inside else None
    return Activations(profile.peak, batch_size, shapes, "; ".join(notes), without)


def _autocast(precision: str, device: str | None = None) -> Any:
    """The Trainer's mixed precision on this machine's device type (a no-op context in fp32)."""
    import contextlib

    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def fsdp_groups(model: nn.Module, precision: str) -> FsdpGroups:
    """The groups FSDP2 will shard `model` into (the blocks `wrap_classes` names, each apart from any block
    inside it, and the root with the rest), in bytes of the dtype it computes in."""
    from trainers.fsdp import wrap_classes

    classes = set(wrap_classes(model))
    half = 2 if precision in ("bf16", "fp16") else None
    owner: dict[int, int] = {}  # parameter -> the innermost wrapped block holding it (id); absent: the root
    for module in model.modules():  # outer blocks come first, so an inner block takes its parameters over
        if type(module).__name__ in classes:
            for p in module.parameters():
                owner[id(p)] = id(module)
    sizes: dict[int | None, int] = {}
    for p in unique_parameters(model):
        key = owner.get(id(p))
        sizes[key] = sizes.get(key, 0) + param_numel(p) * (half or p.element_size())
    root = sizes.pop(None, 0)
    return FsdpGroups(root, max(sizes.values(), default=0), len(sizes))


def deepspeed_layout(launch: Any) -> tuple[int | None, bool, bool, str | None]:
    """(ZeRO stage, offload optimizer, offload params, config file) the run will use: `--zero N [--offload]`,
    or what an actual `--deepspeed FILE` says (stage 0: DeepSpeed without ZeRO, shown as DDP)."""
    if launch.deepspeed_config is None:
        return launch.zero, launch.offload, launch.offload and launch.zero == 3, None
    from trainers.launchers.deepspeed_config import load_deepspeed_config, offload_devices, zero_stage

    config = load_deepspeed_config(launch.deepspeed_config)
    stage = zero_stage(config)
    optimizer_device, param_device = offload_devices(config)
    return (
        stage or None,
        optimizer_device not in (None, "none"),
        param_device not in (None, "none"),
        launch.deepspeed_config,
    )


def memory_plan(recipe: Any, prepared: Any, task: Any = None, activations: bool = False) -> MemoryPlan:
    """The recipe's memory per device; `activations` runs the measured forward+backward (dry-run)."""
    launch, t = recipe.launch, recipe.training
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    zero, offload, offload_params, source = deepspeed_layout(launch)
    deepspeed = launch.zero is not None or launch.deepspeed_config is not None
    state = model_state(prepared.model, deepspeed and precision in ("bf16", "fp16"), t.optim)
    plan = MemoryPlan(
        state,
        launch.nproc * launch.nnodes,
        zero,
        offload,
        t.optim,
        precision,
        offload_params=offload_params,
        deepspeed_file=source,
    )
    if launch.engine == "fsdp":
        plan.fsdp = fsdp_groups(prepared.model, precision)
    if activations:
        plan.activations = measure_activations(recipe, prepared, task, precision)
    return plan
