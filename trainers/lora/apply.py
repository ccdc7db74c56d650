"""Wrap a model with LoRA as the recipe declares it, combined with the freeze rules and stages.

Order (inside `prepare_model`): freeze rules → stages resolved → `apply_lora` → gates → optimizer groups.

How the freeze rules combine with LoRA: with a `lora` section the base model starts frozen (peft's rule;
the plan shows it as an implicit `freeze *` first rule) and the recipe's rules then apply, in order, to
the paths of the original model. Base parameters the rules leave trainable, and those a stage will
unfreeze, are covered by the smallest set of whole modules; these become peft `modules_to_save` (with
`lora.modules_to_save`), so they are saved with the adapter and reload with stock
`PeftModel.from_pretrained`. Inside such a module the trainable copy mirrors the rules parameter by
parameter (a frozen LayerNorm inside an unfrozen block stays frozen). A module cannot be both fully
trained and LoRA-targeted: matched targets inside a fully trained module are left out of LoRA
(peft `exclude_modules`, listed in the plan); if that leaves no target at all, it is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from trainers.errors import FreezeTargetError, RecipeError
from trainers.lora.names import unwrap_peft
from trainers.lora.targets import TargetMatch, resolve_targets
from trainers.plan_records import StagePlan
from trainers.recipe.config import Lora
from trainers.zero3 import param_numel

logger = logging.getLogger(__name__)

ADAPTER = "default"


@dataclass
class TiedWeight:
    """A parameter inside a LoRA target / saved module that is shared with a module outside it."""

    module: str  # the target or modules_to_save path
    name: str  # the parameter name inside it
    shared_with: str  # its alias outside
    action: str  # "untied" (own copy) or "refused"
    in_lora_target: bool = False  # a LoRA base weight (needs a real copy) or inside a modules_to_save module


@dataclass
class LoraPlan:
    """What `apply_lora` did, for the plan render, plan.json and the run summary."""

    config: dict[str, Any]
    targets: dict[str, list[str]]  # top-level module (tower) → wrapped module paths
    target_entries: dict[str, int]  # each target entry → how many modules it hit
    modules_to_save: list[str]  # full paths
    from_rules: list[str]  # which of them come from freeze rules / stages
    tied: list[TiedWeight] = field(default_factory=list)
    excluded: list[str] = field(
        default_factory=list
    )  # matched targets inside modules_to_save (trained fully)
    lora_params: int = 0
    saved_module_params: int = 0
    trainable: int = 0  # peft's get_nb_trainable_parameters()[0]
    all_params: int = 0  # peft's get_nb_trainable_parameters()[1]
    base_params: int = 0  # unique parameters of the base model (what a merged model holds)
    adapter_bytes: int = 0  # what adapter_model.safetensors holds (LoRA + modules_to_save tensors)
    # the LoRA matrices alone: the part of the adapter that is smaller than what it adapts
    lora_bytes: int = 0
    base_bytes: int = 0

    @property
    def untied_names(self) -> list[str]:
        """Tied parameters of LoRA targets, cloned before wrapping (modules_to_save copies are separate anyway)."""
        return [t.name for t in self.tied if t.action == "untied" and t.in_lora_target]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tied"] = [asdict(t) for t in self.tied]
        return out

    def render(self) -> str:
        c = self.config
        targets = c["target_modules"]
        lines = [
            f"LoRA (peft LoraConfig): r={c['r']} alpha={c['lora_alpha']:g} dropout={c['lora_dropout']:g} "
            f"bias={c['bias']} dora={'on' if c['use_dora'] else 'off'}",
            f"  target_modules: {targets}  ->  "
            + ", ".join(f"{k}: {v} modules" for k, v in self.target_entries.items()),
        ]
        for tower, paths in self.targets.items():
            lines.append(f"  {tower}: {len(paths)} LoRA modules")
            lines += [f"    {p}" for p in _compress(paths)]
        if len(self.targets) > 1:
            lines.append(
                f"  note: the targets hit {len(self.targets)} top-level modules ({', '.join(self.targets)}); "
                "use lora.target_regex to restrict them to one"
            )
        if self.excluded:
            lines.append(
                f"  not LoRA-wrapped: {len(self.excluded)} matched modules inside modules_to_save "
                "(they train fully there):"
            )
            lines += [f"    {p}" for p in _compress(self.excluded)]
        if self.modules_to_save:
            lines.append("  modules_to_save (trained fully, saved with the adapter):")
            for m in self.modules_to_save:
                lines.append(f"    {m}" + ("  [from freeze rules / stages]" if m in self.from_rules else ""))
        for t in self.tied:
            lines.append(
                f"  tied: {t.name} (in {t.module}) shares its tensor with {t.shared_with}: "
                + (
                    "refused"
                    if t.action != "untied"
                    else "untied: the LoRA base weight gets its own copy, so merging cannot change the other"
                    if t.in_lora_target
                    else "the saved module trains its own copy; the other stays as it is"
                )
                + " (the model config now says tie_word_embeddings=false)"
            )
        lines.append(
            f"  LoRA params: {self.lora_params:,}; modules_to_save params: {self.saved_module_params:,}; "
            f"trainable (peft get_nb_trainable_parameters): {self.trainable:,} / {self.all_params:,}"
        )
        split = (
            f" (LoRA {_mb(self.lora_bytes)} + modules_to_save {_mb(self.adapter_bytes - self.lora_bytes)})"
            if self.adapter_bytes > self.lora_bytes
            else ""
        )  # a saved module is a whole copy: at tiny sizes it can make the adapter as large as the model
        lines.append(f"  adapter size: {_mb(self.adapter_bytes)}{split} vs full model {_mb(self.base_bytes)}")
        return "\n".join(lines)


def peft_config(
    lora: Lora, modules_to_save: Sequence[str] | None = None, exclude: Sequence[str] | None = None
):
    """The recipe's `lora` section as a peft `LoraConfig`."""
    from peft import LoraConfig

    targets: str | list[str] = (
        lora.target_regex if lora.target_regex is not None else list(lora.target_modules)
    )
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        use_dora=lora.use_dora,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        exclude_modules=list(exclude) if exclude else None,
    )


def apply_lora(model: nn.Module, lora: Lora, stages: Sequence[StagePlan] = ()) -> tuple[nn.Module, LoraPlan]:
    """Wrap `model` (freeze rules already applied) with LoRA; rename `stages` to the wrapped names.

    Returns the PeftModel and the plan. Stage parameter names stay relative to the original model.
    """
    from peft import get_peft_model

    match = resolve_targets(model, lora)
    params = dict(model.named_parameters())
    stage_names = {n for s in stages for n in s.param_names}
    trainable_ids = {id(p) for n, p in params.items() if p.requires_grad or n in stage_names}
    # Every alias of a tied tensor: the rules select it under its first name, the copy needs all of them.
    requires_grad = {
        n: p.requires_grad or id(p) in trainable_ids
        for n, p in model.named_parameters(remove_duplicate=False)
    }

    from_rules = _covering_modules(model, trainable_ids)
    declared = _resolve_saved_modules(model, lora.modules_to_save)
    saved = _outermost([*declared, *from_rules])
    excluded = _exclude_inside_saved(match, saved)
    tied = _tied_weights(model, [*match.modules, *saved], lora.tied_weights, set(match.modules))
    untie(model, [t.name for t in tied if t.in_lora_target])
    if tied:
        mark_untied(model)

    config = peft_config(lora, saved, excluded)
    peft_model = get_peft_model(model, config)
    core = unwrap_peft(peft_model)
    _check_wrapped(core, match, saved)

    # The trainable copy of a module that came from the freeze rules mirrors the rules per parameter.
    declared_set = set(declared)
    for path in saved:
        copy = core.get_submodule(path).modules_to_save[ADAPTER]
        for rel, p in copy.named_parameters():
            p.requires_grad_(path in declared_set or requires_grad.get(f"{path}.{rel}", False))
    for stage in stages:
        stage.param_names = [_copy_name(n, saved) for n in stage.param_names]

    plan = LoraPlan(
        config={
            "r": lora.r,
            "lora_alpha": lora.lora_alpha,
            "lora_dropout": lora.dropout,
            "bias": lora.bias,
            "use_dora": lora.use_dora,
            "target_modules": lora.target_regex
            if lora.target_regex is not None
            else list(lora.target_modules),
            "modules_to_save": saved,
            "tied_weights": lora.tied_weights,
            "exclude_modules": excluded,
        },
        targets=match.by_tower(),
        target_entries={k: len(v) for k, v in match.by_entry.items()},
        modules_to_save=saved,
        from_rules=[m for m in saved if m not in declared_set],
        tied=tied,
        excluded=excluded,
    )
    _fill_counts(peft_model, plan)
    return peft_model, plan


def untie(model: nn.Module, names: Sequence[str]) -> None:
    """Give each named parameter its own copy of the shared tensor; the config stops re-tying them."""
    for name in names:
        owner_path, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_path)
        shared = getattr(owner, leaf)
        setattr(owner, leaf, nn.Parameter(shared.detach().clone(), requires_grad=shared.requires_grad))
    if names:
        mark_untied(model)


def mark_untied(model: nn.Module) -> None:
    """Set tie_word_embeddings=False on the config and its sub-configs (so save/load keep them apart)."""
    config = getattr(model, "config", None)
    if config is None:
        return
    configs = [config, *(v for v in vars(config).values() if hasattr(v, "tie_word_embeddings"))]
    for c in configs:
        if hasattr(c, "tie_word_embeddings"):
            c.tie_word_embeddings = False


# ------------------------------------------------------------------------------------------ helpers


def _covering_modules(model: nn.Module, trainable_ids: set[int]) -> list[str]:
    """Smallest set of module paths whose parameters include every trainable one (whole modules if possible)."""
    if not trainable_ids:
        return []
    taken: list[str] = []
    for path, module in model.named_modules():
        if any(path == t or path.startswith(t + ".") for t in taken):
            continue
        ids = [id(p) for p in module.parameters()]
        if not ids or isinstance(
            module, nn.ModuleList | nn.ModuleDict
        ):  # peft cannot save a container: its items
            continue
        direct = [id(p) for p in module.parameters(recurse=False)]
        if all(i in trainable_ids for i in ids) or any(i in trainable_ids for i in direct):
            if path == "":
                raise RecipeError(
                    "with lora set, the freeze rules leave the whole model trainable: that is a full fine-tune "
                    "plus adapters. Remove the `lora` section, or freeze the base (with LoRA the base starts "
                    "frozen; drop the Unfreeze('*') rule)."
                )
            taken.append(path)
    return taken


def _resolve_saved_modules(model: nn.Module, entries: Sequence[str]) -> list[str]:
    import difflib

    paths = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for entry in entries:
        hits = [p for p in paths if p == entry or p.endswith("." + entry)]
        if not hits:
            close = difflib.get_close_matches(entry, paths, n=5, cutoff=0.4) or sorted(
                {p.split(".")[0] for p in paths}
            )
            raise FreezeTargetError(
                f"lora.modules_to_save entry {entry!r} matches no module of {type(model).__name__}. "
                f"Nearest module paths: {', '.join(close)}."
            )
        out.extend(h for h in hits if h not in out)
    return out


def _outermost(paths: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(p != q and p.startswith(q + ".") for q in unique)]


def _exclude_inside_saved(match: TargetMatch, saved: Sequence[str]) -> list[str]:
    """Matched targets inside a fully trained module are left to it (peft `exclude_modules`); all of them is an error."""
    excluded = [t for t in match.modules if any(t == s or t.startswith(s + ".") for s in saved)]
    if excluded and len(excluded) == len(match.modules):
        holder = next(s for s in saved if excluded[0] == s or excluded[0].startswith(s + "."))
        raise RecipeError(
            f"every LoRA target lies inside a module that is trained fully ({holder!r}: lora.modules_to_save, an "
            "Unfreeze rule or a stage), so no adapter would be added. Narrow the Unfreeze rule / modules_to_save, "
            "or drop the `lora` section for a full fine-tune."
        )
    if excluded:
        match.modules = [t for t in match.modules if t not in excluded]
        match.by_entry = {k: [t for t in v if t not in excluded] for k, v in match.by_entry.items()}
    return excluded


def _tied_weights(
    model: nn.Module, modules: Sequence[str], policy: str, targets: set[str]
) -> list[TiedWeight]:
    names_of: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    found: list[TiedWeight] = []
    for module in modules:
        for names in names_of.values():
            inside = [n for n in names if n.startswith(module + ".")]
            outside = [n for n in names if not n.startswith(module + ".")]
            if inside and outside:
                action = "untied" if policy == "untie" else "refused"
                found.extend(TiedWeight(module, n, outside[0], action, module in targets) for n in inside)
    if found and policy == "refuse":
        t = found[0]
        raise RecipeError(
            f"{t.name} (in LoRA target / saved module {t.module!r}) is the same tensor as {t.shared_with} (tied "
            "weights, e.g. an LM head and the word embedding). A LoRA merge would add its update to the input "
            "embedding too, and a modules_to_save copy would silently stop being tied. Set "
            "lora.tied_weights=untie to give it its own copy, or leave that module out of lora.target_modules / "
            "modules_to_save / the Unfreeze rules."
        )
    return found


def _check_wrapped(core: nn.Module, match: TargetMatch, saved: Sequence[str]) -> None:
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    lora_paths = sorted(n for n, m in core.named_modules() if isinstance(m, LoraLayer))
    saved_paths = sorted(n for n, m in core.named_modules() if isinstance(m, ModulesToSaveWrapper))
    if lora_paths != sorted(match.modules) or saved_paths != sorted(saved):
        raise RuntimeError(
            f"peft wrapped other modules than resolved: LoRA {len(lora_paths)} vs {len(match.modules)}, "
            f"modules_to_save {saved_paths} vs {sorted(saved)}"
        )


def _copy_name(name: str, saved: Sequence[str]) -> str:
    for path in saved:
        if name.startswith(path + "."):
            return f"{path}.modules_to_save.{ADAPTER}.{name[len(path) + 1 :]}"
    raise RuntimeError(f"stage parameter {name} is in no modules_to_save module")


def _is_lora_param(name: str) -> bool:
    return "lora_" in name


def _fill_counts(peft_model: nn.Module, plan: LoraPlan) -> None:
    trainable, total = peft_model.get_nb_trainable_parameters()
    plan.trainable, plan.all_params = int(trainable), int(total)
    for name, p in unwrap_peft(peft_model).named_parameters():
        numel = param_numel(p)
        size = numel * p.element_size()
        if _is_lora_param(name):
            plan.lora_params += numel
            plan.adapter_bytes += size
            plan.lora_bytes += size
        elif f".modules_to_save.{ADAPTER}." in name:
            plan.saved_module_params += numel
            plan.adapter_bytes += size
        else:
            plan.base_params += numel
            plan.base_bytes += size


def _compress(paths: Sequence[str]) -> list[str]:
    """`a.layer.0.q`, `a.layer.1.q` → `a.layer.{0-1}.q (x2)`: layer indices folded for a readable plan."""
    groups: dict[str, list[int]] = {}
    for p in paths:
        numbers = re.findall(r"\.(\d+)(?=\.)", p)
        key = re.sub(r"\.(\d+)(?=\.)", ".#", p, count=1)
        groups.setdefault(key, []).append(int(numbers[0]) if numbers else -1)
    out = []
    for key, idx in groups.items():
        if idx == [-1]:
            out.append(key)
        else:
            span = f"{min(idx)}-{max(idx)}" if len(idx) > 1 else str(idx[0])
            out.append(key.replace("#", "{" + span + "}", 1) + (f"  (x{len(idx)})" if len(idx) > 1 else ""))
    return out


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"
