"""Errors raised while obtaining pretrained models."""

from __future__ import annotations

from trainers.errors import UserFacingError

_LOCAL_DIR_CONTENTS = (
    "config.json, the weights (model.safetensors) and the processor files "
    "(preprocessor_config.json or processor_config.json, and tokenizer.json or vocab.txt)"
)
_DEMO = "or run the recipe with `--demo` to use the tiny offline model."


def _how_to_provide(model_id: str, local: bool) -> str:
    if local:
        return (
            f"To provide it: point `model.id=` at a directory holding {_LOCAL_DIR_CONTENTS}, such as one written "
            "by save_pretrained or by `hf download <hub id> --local-dir DIR` on a machine with Hub access; "
            + _DEMO
        )
    return (
        f"To provide it: on a machine with Hub access run `hf download {model_id}` (`huggingface-cli download "
        f"{model_id}` with older huggingface_hub) and copy its cache directory (HF_HUB_CACHE, by default "
        f"$HF_HOME/hub) to the same place here; or set `model.id=` to a local directory holding "
        f"{_LOCAL_DIR_CONTENTS}; " + _DEMO
    )


class ModelNotAvailableError(UserFacingError, RuntimeError):
    """A pretrained model cannot be loaded from the cache, the Hub or the given directory.

    `problem` says what went wrong for this id (default: not cached and the Hub unreachable); the message
    always ends with how to make the model available. `local` marks ids that name a directory.
    """

    def __init__(
        self, model_id: str, problem: str | None = None, cause: str | None = None, local: bool = False
    ) -> None:
        self.model_id = model_id
        self.problem = problem or (
            f"model {model_id!r} is not in the local Hugging Face cache and the Hub cannot be reached"
        )
        self.cause = cause
        self.local = local
        detail = f" (loader said: {cause})" if cause else ""
        super().__init__(f"{self.problem}{detail}. {_how_to_provide(model_id, local)}")
