"""`RecipeTrainer`: the HF Trainer with declared parameter groups and task evaluation.

Checkpoints are written atomically (`trainers.checkpoints.AtomicCheckpoints`). Two more hooks:
`create_optimizer` builds the groups planned by `build_param_groups` (the path DeepSpeed also
takes, so groups reach ZeRO), and `evaluation_loop` adds the task's generation
metrics and composite scores to the loss the Trainer computes, so best-checkpoint tracking and
early stopping see them like any other metric. Loading a checkpoint back (resume, best model at the
end) does not report tied weights as missing: they are saved once, under the name they share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torch.nn.modules.module import _IncompatibleKeys
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput

from trainers.checkpoints import AtomicCheckpoints
from trainers.lora.names import strip_peft_prefix
from trainers.optim.param_groups import GroupPlan
from trainers.recipe.config import CompositeMetric

Evaluator = Callable[[Trainer], dict[str, float]]


class RecipeTrainer(AtomicCheckpoints, Trainer):
    def __init__(
        self,
        *args,
        group_plans: Sequence[GroupPlan],
        evaluator: Evaluator | None = None,
        composite_metrics: Sequence[CompositeMetric] = (),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_plans = list(group_plans)
        self.evaluator = evaluator
        self.composite_metrics = list(composite_metrics)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        # Plans name parameters of the original model; inside a peft wrapper they gain `base_model.model.`.
        named = {strip_peft_prefix(n): p for n, p in opt_model.named_parameters()}
        planned = {n for g in self.group_plans for n in g.param_names}
        unplanned = [n for n, p in named.items() if p.requires_grad and n not in planned]
        if unplanned:
            raise RuntimeError(
                f"{len(unplanned)} trainable parameters are in no optimizer group (first: {unplanned[:3]}); "
                "param groups must be planned after freezing, stages and adapters are applied."
            )
        groups = [
            {
                "params": [named[n] for n in g.param_names],
                "lr": g.lr,
                "weight_decay": g.initial_weight_decay,
                "name": g.name,
            }
            for g in self.group_plans
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def evaluation_loop(
        self,
        dataloader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.evaluator is None and not self.composite_metrics:
            return output
        prefix = f"{metric_key_prefix}_"
        metrics = {k.removeprefix(prefix): v for k, v in output.metrics.items()}
        if self.evaluator is not None:
            metrics.update(self.evaluator(self))
        for composite in self.composite_metrics:
            metrics[composite.name] = composite.compute(metrics)
        output.metrics.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return output

    def _issue_warnings_after_load(self, load_result) -> None:
        """The Trainer's missing/unexpected-keys warnings, minus tied aliases whose shared tensor was loaded.

        safetensors stores a tensor once, so BLIP's LM head (`text_decoder.cls.predictions.decoder.*`, tied to
        the word embedding and the prediction bias) is absent from the file; `load_state_dict` copies into the
        shared tensor in place, so the head is loaded too, and a "missing keys" warning would only read as a
        broken checkpoint.
        """
        missing = set(load_result.missing_keys)
        loaded_alias = {n for names in tied_names(self.model) for n in names if n in missing
                        and any(other not in missing for other in names)}
        kept = [k for k in load_result.missing_keys if k not in loaded_alias]
        super()._issue_warnings_after_load(_IncompatibleKeys(kept, list(load_result.unexpected_keys)))


def tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (tied weights), as `named_parameters` spells them."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]
