"""One pretrained loader for every model family: hub id or local directory, offline errors, load options.

`load_pretrained(model_id, ModelClass, ProcessorClass, LoadOptions(...))` returns (model, processor).
Every way of not finding a model raises `ModelNotAvailableError` (a user-facing error: one paragraph,
exit status 2) saying how to provide it. A local directory is checked for the files a family needs before
transformers sees it; a hub id is looked up in the cache only when HF offline mode is on or the Hub does not
answer a TCP probe (`trainers.hub_probe`), so an unreachable Hub fails in a fraction of a second instead of
after ~50 s of retries.

Load options are one dataclass: `dtype`, `revision` (hub branch, tag or commit), `quantization` (a
`transformers.BitsAndBytesConfig`, or a `trainers.lora.quantize.Quantization`, which builds that config
for the model class at hand: it needs the architecture to know which heads to keep in full precision),
and `trust_remote_code`, off unless the recipe says so: a checkpoint that ships its own Python code runs it
only with explicit consent.

How it plugs in: `Model` has `revision`, `trust_remote_code` (and `quantization`); every family's loader
calls `load_pretrained(model.id, cls, processor_cls, options, processor_files)` (through
`trainers.models.family.HFParts.load` for the Hugging Face families; BLIP with stricter file groups: an
image processor file *and* a tokenizer file). `check_available` is the
same lookup without loading, for the launcher, which checks once instead of in every worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError

from trainers import hub_probe
from trainers.errors import RecipeError, UserFacingError
from trainers.models.errors import ModelNotAvailableError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# any one of these makes a processor loadable for most families; a family may ask for more (BLIP: both kinds)
PROCESSOR_FILES: tuple[tuple[str, ...], ...] = (
    (
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer_config.json",
        "tokenizer.json",
        "vocab.txt",
    ),
)
_DEMO = "or run the recipe with `--demo` to use the tiny offline model."


@dataclass
class LoadOptions:
    """How to load: dtype ("auto", "float32", "bfloat16", "float16" or a torch.dtype), hub revision,
    quantization (see the module docstring), and whether a checkpoint's own Python code may run."""

    dtype: torch.dtype | str | None = None
    revision: str | None = None
    quantization: Any = None
    trust_remote_code: bool = False


class ModelFilesNotAvailableError(ModelNotAvailableError):
    """ModelNotAvailableError whose how-to names the files this family's directory must hold."""

    def __init__(
        self,
        model_id: str,
        problem: str | None = None,
        cause: str | None = None,
        local: bool = False,
        contents: str = "",
        revision: str | None = None,
    ) -> None:
        super().__init__(model_id, problem, cause, local)
        detail = f" (loader said: {cause})" if cause else ""
        self.args = (f"{self.problem}{detail}. {how_to_provide(model_id, local, contents, revision)}",)


def how_to_provide(model_id: str, local: bool, contents: str, revision: str | None = None) -> str:
    if local:
        return (
            f"To provide it: point `model.id=` at a directory holding {contents}, such as one written by "
            "save_pretrained or by `hf download <hub id> --local-dir DIR` on a machine with Hub access; "
            + _DEMO
        )
    rev = f" --revision {revision}" if revision else ""
    return (
        f"To provide it: on a machine with Hub access run `hf download {model_id}{rev}` (`huggingface-cli download "
        f"{model_id}{rev}` with older huggingface_hub) and copy its cache directory (HF_HUB_CACHE, by default "
        f"$HF_HOME/hub) to the same place here; or set `model.id=` to a local directory holding {contents}; "
        + _DEMO
    )


def describe_files(groups: Sequence[tuple[str, ...]]) -> str:
    parts = ["config.json", "the weights (model.safetensors)"]
    parts += [" or ".join(group) for group in groups]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def missing_files(directory: Path, processor_files: Sequence[tuple[str, ...]]) -> list[str]:
    """What a local model directory lacks, one entry per group of interchangeable files."""
    groups = [("config.json",), WEIGHT_FILES, *processor_files]
    return [" or ".join(group) for group in groups if not any((directory / name).is_file() for name in group)]


def _check_local_dir(model_id: str, processor_files: Sequence[tuple[str, ...]], contents: str) -> Path:
    directory = Path(model_id).expanduser().resolve()
    where = f"model directory {model_id!r}" + ("" if str(directory) == model_id else f" ({directory})")
    if not directory.is_dir():
        raise ModelFilesNotAvailableError(model_id, f"{where} does not exist", local=True, contents=contents)
    missing = missing_files(directory, processor_files)
    if missing:
        raise ModelFilesNotAvailableError(
            model_id, f"{where} is incomplete: it lacks {'; '.join(missing)}", local=True, contents=contents
        )
    return directory


def _dtype(value: torch.dtype | str | None) -> torch.dtype | str | None:
    if value is None or isinstance(value, torch.dtype) or value == "auto":
        return value
    resolved = getattr(torch, str(value), None)
    if not isinstance(resolved, torch.dtype):
        raise RecipeError(
            f"model.dtype={value!r} is not a torch dtype; use auto, float32, bfloat16 or float16."
        )
    return resolved


def _remote_code_error(model_id: str, error: ValueError) -> UserFacingError | None:
    text = str(error)
    if "trust_remote_code" not in text:
        return None
    return RecipeError(
        f"model {model_id!r} ships its own Python code (its config names classes in files of the checkpoint), "
        "which runs only with consent: if you trust that code, set model.trust_remote_code=true (or use a "
        "checkpoint that the installed transformers supports natively)."
    )


def load_pretrained(
    model_id: str | os.PathLike,
    model_class: Any,
    processor_class: Any = None,
    options: LoadOptions | None = None,
    processor_files: Sequence[tuple[str, ...]] = PROCESSOR_FILES,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(model, processor) from a local directory, the HF cache or the Hub; processor None if no class given.

    `model_kwargs` go to the model's `from_pretrained` only (a classification head's labels).

    Raises ModelNotAvailableError (how to provide the model) or RecipeError (remote code without consent).
    """
    options = options or LoadOptions()
    model_id = os.fspath(model_id)
    files = processor_files if processor_class is not None else ()
    contents = describe_files(files)
    local = Path(model_id).expanduser().is_dir() or hub_probe.looks_like_path(model_id)
    if local:
        source, local_only = str(_check_local_dir(model_id, files, contents)), True
        problem = f"model directory {model_id!r} could not be loaded"
    else:
        plan = hub_probe.hub_plan()
        source, local_only, problem = model_id, plan.local_only, plan.problem(f"model {model_id!r}")
    common: dict[str, Any] = {"local_files_only": local_only, "trust_remote_code": options.trust_remote_code}
    if options.revision is not None:
        common["revision"] = options.revision
    try:
        model_kwargs = {**common, **(model_kwargs or {})}
        if options.dtype is not None:
            model_kwargs["dtype"] = _dtype(options.dtype)
        if options.quantization is not None:
            model_kwargs["quantization_config"] = _quantization_config(
                options.quantization, model_class, source, common
            )
        model = model_class.from_pretrained(source, **model_kwargs)
        processor = processor_class.from_pretrained(source, **common) if processor_class is not None else None
    except ValueError as error:
        remote = _remote_code_error(model_id, error)
        if remote is None:
            raise
        raise remote from error
    except (OSError, HFValidationError) as error:  # how transformers reports missing files, repos and bad ids
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFilesNotAvailableError(
            model_id, problem, cause=cause, local=local, contents=contents, revision=options.revision
        ) from error
    return model, processor


def check_available(
    model_id: str | os.PathLike,
    processor_files: Sequence[tuple[str, ...]] = PROCESSOR_FILES,
    revision: str | None = None,
) -> None:
    """Raise the ModelNotAvailableError `load_pretrained` would raise for a missing model, without loading it.

    A local directory is checked for its files; a hub id passes when it is cached (config.json) or the Hub
    is reachable.
    """
    from huggingface_hub import try_to_load_from_cache

    model_id = os.fspath(model_id)
    contents = describe_files(processor_files)
    if Path(model_id).expanduser().is_dir() or hub_probe.looks_like_path(model_id):
        _check_local_dir(model_id, processor_files, contents)
        return
    plan = hub_probe.hub_plan()
    cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    if plan.local_only and not isinstance(cached, str):
        raise ModelFilesNotAvailableError(
            model_id, plan.problem(f"model {model_id!r}"), contents=contents, revision=revision
        )


def _quantization_config(quantization: Any, model_class: Any, source: str, common: dict[str, Any]) -> Any:
    """A ready BitsAndBytesConfig passes through; a request that needs the architecture gets its config."""
    if not hasattr(quantization, "for_model"):
        return quantization
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, **common)
    return quantization.for_model(model_class, config)
