"""Layer-wise learning-rate decay (BEiT, MAE, DINOv2 fine-tuning; timm's `layer_decay`): the layer index of a
parameter, read from the tower layout its family declares, never from per-recipe regexes.

A `LayerStack` lists one tower's layers from input to output. Each entry is one or more parameter-name prefixes;
a `{}` in a prefix stands for a block index (`"vit.layers.{}."`), and every index found in the model is one
layer. With `depth` layers in the stack (embeddings at 0), layer `i` trains at `lr * decay ** (depth - i)`: the
embeddings lowest, the last block at `lr * decay`; the stack's `top` (a final norm, a pooler, a neck) and every
parameter outside all stacks (the heads) at the full rate, as timm does. LoRA matrices and `modules_to_save`
copies sit under their base module's name, so they take their base layer's rate. Torch-free: families import
it to declare their layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainers.errors import RecipeError

_INDEX = "{}"


@dataclass(frozen=True)
class LayerStack:
    """One tower's layers from input to output.

    layers: each entry is a prefix or a tuple of prefixes sharing one index (`("convs.{}.", "blocks.{}.")`: a
        stage and its downsampling conv are one layer); a prefix with `{}` gives one layer per index found.
        An entry no parameter matches takes no index.
    top: prefixes after the last layer (final norm, pooler): the full rate, like the heads.
    """

    name: str
    layers: tuple[str | tuple[str, ...], ...]
    top: tuple[str, ...] = ()

    def entries(self) -> list[tuple[str, ...]]:
        return [(e,) if isinstance(e, str) else tuple(e) for e in self.layers]


@dataclass(frozen=True)
class LayerPosition:
    """Where a parameter sits in its stack: layer `index` of `depth` (`index == depth`: the stack's top)."""

    stack: str
    index: int
    depth: int
    label: str  # the layer's prefix with its index filled in (`vit.layers.3`), or `top`

    def scale(self, decay: float) -> float:
        return decay ** (self.depth - self.index)

    @property
    def key(self) -> str:
        return f"{self.stack}.{self.index}"

    def to_dict(self) -> dict:
        return {"stack": self.stack, "layer": self.index, "depth": self.depth, "label": self.label}


def _pattern(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + r"(\d+)".join(re.escape(p) for p in prefix.split(_INDEX)))


def layer_positions(stacks: Sequence[LayerStack], names: Iterable[str]) -> dict[str, LayerPosition]:
    """Parameter name → its position, for the names some stack places (the first stack and entry that match).

    Indices are counted over all `names` (frozen ones included), so the depth is the architecture's, not the
    freeze map's.
    """
    names = list(names)
    placed: dict[str, LayerPosition] = {}
    for stack in stacks:
        rows: list[tuple[str, int, str]] = []  # (name, layer index, layer label), in layer order
        taken: set[str] = set()
        depth = 0
        for prefixes in stack.entries():
            found: dict[tuple[int, ...], list[str]] = {}
            label_of: dict[tuple[int, ...], str] = {}
            for prefix in prefixes:
                pattern = _pattern(prefix)
                for name in names:
                    match = None if name in placed or name in taken else pattern.match(name)
                    if match is None:
                        continue
                    index = tuple(int(g) for g in match.groups())
                    found.setdefault(index, []).append(name)
                    label_of.setdefault(index, match.group(0).rstrip("."))
                    taken.add(name)
            for index in sorted(found):
                rows += [(name, depth, label_of[index]) for name in found[index]]
                depth += 1
        for name, layer, label in rows:
            placed[name] = LayerPosition(stack.name, layer, depth, label)
        top = tuple(stack.top)
        for name in names:
            if top and name not in placed and name.startswith(top):
                placed[name] = LayerPosition(stack.name, depth, depth, "top")
    return placed


def no_layout_error(family: str, keys: Sequence[str]) -> RecipeError:
    """The refusal for a family that declares no tower layout."""
    return RecipeError(
        f"{', '.join(keys)}: model family {family!r} declares no layer layout, so its parameters have no layer "
        "index to decay the learning rate by. Remove layer_decay (per-group rates stay available through "
        "ParamGroup(lr_mult=...)), or declare the family's towers from input to output as "
        "`layers=(LayerStack(name, layers=(embeddings prefix, 'blocks.{}.'), top=(final norm,)),)` on its "
        "FamilyEntry (trainers/optim/layer_decay.py describes LayerStack)."
    )
