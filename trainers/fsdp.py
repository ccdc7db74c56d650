"""FSDP2 as the second engine (`launch.engine=fsdp`): full-shard through accelerate's plugin, on GPU and CPU.

What it is for: the cases DeepSpeed users switch for — full sharding of parameters, gradients and optimizer
state with frozen towers and LoRA beside trainable parameters (FSDP2 shards per parameter, so mixed
`requires_grad` inside one wrapped block needs no `use_orig_params` flag), checkpoints the Trainer saves and
resumes (`pytorch_model_fsdp.bin` + `optimizer.bin` per rank, plus a gathered `model.safetensors`), and the
best model loaded back at the end.

Two things are refused before launch (`check_fsdp`), each in one paragraph: progressive stages (their gates are
gradient hooks on the original parameters, which `fully_shard` replaces with sharded ones, so a gated block
would train from the first step) and quantized (QLoRA) models (bitsandbytes' packed weights are not sharded
by FSDP2 here and nothing tests that path). ZeRO together with FSDP is one engine too many.

On one process FSDP has nothing to shard (the Trainer refuses it), so a 1-process run trains plainly: that
is also the reference every 2-rank FSDP test compares with.

CPU: accelerate sets the FSDP plugin only for GPU-like multi-process types; with `use_cpu` (which the CPU
world needs, see FIELD-NOTES) its state is `MULTI_CPU` and the plugin is dropped silently. `FsdpOnCpu`
promotes that state to FSDP with the same plugin, so the gloo test ranks run the same sharding code a GPU
run does (`fully_shard` works on CPU tensors; measured: 2 ranks = 1 rank, resume bit-identical).
"""

from __future__ import annotations

from typing import Any

from trainers.errors import RecipeError
from trainers.recipe.config import Recipe

ENGINES = ("auto", "fsdp")


def wants_fsdp(recipe: Recipe) -> bool:
    return recipe.launch.engine == "fsdp"


def check_fsdp(recipe: Recipe) -> None:
    """Refuse what cannot work under FSDP2, before any process starts or a model is loaded."""
    if not wants_fsdp(recipe):
        return
    launch = recipe.launch
    if launch.zero is not None or launch.deepspeed_config:
        chosen = (
            f"launch.zero={launch.zero}" if launch.zero is not None else "--deepspeed/launch.deepspeed_config"
        )
        raise RecipeError(
            f"launch.engine=fsdp and {chosen} both ask for an engine that shards the model: a run has one. "
            "Drop the ZeRO setting to train under FSDP2, or set launch.engine=auto to keep DeepSpeed."
        )
    if recipe.stages:
        raise RecipeError(
            f"The recipe declares {len(recipe.stages)} progressive unfreezing stage(s) (stages=...), which "
            "launch.engine=fsdp cannot run: a stage's parameters are held at zero gradient by hooks on the "
            "original parameters, and FSDP2's fully_shard replaces those with sharded ones, so the gated "
            "block would train from the first step. Train the stages under DDP or DeepSpeed ZeRO "
            "(launch.engine=auto, e.g. --zero 3 for sharding), or drop stages=... (stages=none) to train the "
            "unfrozen set under FSDP."
        )
    if recipe.model.quantization is not None:
        raise RecipeError(
            "model.quantization (QLoRA) with launch.engine=fsdp is not supported here: bitsandbytes' packed "
            "4/8-bit weights are not sharded by FSDP2 and no test covers that path. Use LoRA on the "
            "unquantized model under FSDP, or QLoRA under DDP / ZeRO-1/2 (launch.engine=auto)."
        )


def fsdp_arguments(recipe: Recipe, world_size: int) -> dict[str, Any]:
    """`TrainingArguments` keywords for FSDP2 full-shard (empty without FSDP or on one process).

    Transformer blocks are wrapped one by one (accelerate's TRANSFORMER_BASED_WRAP reads the model's
    `_no_split_modules`), then the root; checkpoints hold the full state dict, so `best/` is a plain
    `from_pretrained` folder.
    """
    if not wants_fsdp(recipe) or world_size <= 1:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,  # full shard (ZeRO-3-like); False keeps params gathered (ZeRO-2-like)
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
        },
    }


class FsdpSetup:
    """Trainer mixin: the FSDP2 plugin this module configures, on GPU and CPU ranks alike.

    Three corrections after the Trainer builds its accelerator: on CPU, accelerate's `MULTI_CPU` state becomes
    FSDP with the requested plugin (see the module docstring); and the block-by-block wrap policy is kept
    for peft models, where the Trainer would swap in peft's FSDP1-style policy, which accelerate's FSDP2
    path does not read (no block is wrapped on its own, and sharding the ViT LoRA demo then failed with
    "value was None" in `fully_shard`); and the blocks to wrap are named (`wrap_classes`).
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType

        state = self.accelerator.state
        plugin_args = getattr(self.args, "fsdp_plugin_args", None)
        if plugin_args is None:
            return
        if state.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.FSDP):
            return
        plugin = _fixed_policy_plugin(
            {**plugin_args, "transformer_cls_names_to_wrap": wrap_classes(self.model)}
        )
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        plugin.lock_wrap_policy()
        _keep_tied_head_with_its_embedding(self.accelerator)
        # AcceleratorState copies PartialState's fields each time it is built: set both.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
        AcceleratorState._shared_state["fsdp_plugin"] = plugin
        self.is_fsdp_enabled = True


def wrap_classes(model: Any) -> list[str]:
    """The block classes sharded one by one: the model's `_no_split_modules` present in it, less any block
    that holds the input or output embeddings (accelerate shards those on their own afterwards, and a
    parameter sharded twice fails: ViT's `ViTEmbeddings` holds its `patch_embeddings`) or a weight tied to
    one outside it (FSDP2 refuses a parameter seen by two groups: BLIP's `BlipTextEmbeddings` holds the word
    embedding its LM head shares)."""
    names = list(getattr(model, "_no_split_modules", None) or [])
    embeddings = [
        getattr(model, "get_input_embeddings", lambda: None)(),
        getattr(model, "get_output_embeddings", lambda: None)(),
    ]
    embeddings = [e for e in embeddings if e is not None]
    holders: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(param), []).append(name)
    tied = {pid: names_ for pid, names_ in holders.items() if len(names_) > 1}
    prefixes = {id(m): n for n, m in model.named_modules()}
    keep = []
    for name in names:
        blocks = [m for m in model.modules() if type(m).__name__ == name]
        holds_embedding = any(
            e is not b and any(e is x for x in b.modules()) for b in blocks for e in embeddings
        )
        holds_tied = any(
            not all(n.startswith(prefixes[id(b)] + ".") for n in tied[id(p)])
            for b in blocks
            for p in b.parameters()
            if id(p) in tied
        )
        if blocks and not holds_embedding and not holds_tied:
            keep.append(name)
    return keep


def embeddings_to_hide(model: Any) -> list[str]:
    """The embedding getters to hide while accelerate shards the model: an input or output embedding whose
    weight is tied to a parameter accelerate does not see as its partner. accelerate shards each embedding
    in a group of its own (tied input and output embeddings together), and FSDP2 refuses a parameter seen by
    two groups. BLIP through peft: `get_input_embeddings` is the text decoder's word embedding, tied to the
    LM head, and `get_output_embeddings` is None. Hidden, both stay in the root group together."""
    found = {
        getter: getattr(model, getter, lambda: None)()
        for getter in ("get_input_embeddings", "get_output_embeddings")
    }
    weights = {getter: getattr(module, "weight", None) for getter, module in found.items()}
    if (
        weights["get_input_embeddings"] is not None
        and weights["get_input_embeddings"] is weights["get_output_embeddings"]
    ):
        return []  # accelerate puts tied input and output embeddings in one group itself
    hidden = []
    for getter, module in found.items():
        weight = weights[getter]
        if weight is not None and any(
            other is not module and any(p is weight for p in other.parameters(recurse=False))
            for other in model.modules()
        ):
            hidden.append(getter)
    return hidden


def _keep_tied_head_with_its_embedding(accelerator: Any) -> None:
    """Run accelerate's FSDP2 preparation with the getters of `embeddings_to_hide` returning None."""
    if getattr(accelerator, "_tied_head_kept", False):
        return
    prepare = accelerator._prepare_fsdp2

    def prepare_fsdp2(*args):
        hidden = [(a, g) for a in args if hasattr(a, "named_parameters") for g in embeddings_to_hide(a)]
        for model, getter in hidden:
            setattr(model, getter, lambda: None)  # an instance attribute shadows the method
        try:
            return prepare(*args)
        finally:
            for model, getter in hidden:
                delattr(model, getter)

    accelerator._prepare_fsdp2 = prepare_fsdp2
    accelerator._tied_head_kept = True


def _fixed_policy_plugin(plugin_args: dict[str, Any]) -> Any:
    """accelerate's FSDP plugin whose wrap policy, once locked, ignores later assignments."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    class FixedPolicyPlugin(FullyShardedDataParallelPlugin):
        def lock_wrap_policy(self) -> None:
            object.__setattr__(self, "_wrap_policy_locked", True)

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "auto_wrap_policy" and getattr(self, "_wrap_policy_locked", False):
                return
            super().__setattr__(name, value)

    return FixedPolicyPlugin(**plugin_args)


def full_tensor(tensor: Any) -> Any:
    """A DTensor (an FSDP2-sharded parameter) as its full tensor (a collective); anything else unchanged."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
