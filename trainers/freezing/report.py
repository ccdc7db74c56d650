"""The freeze map: per top-level module, and per tower of the family, how many parameters exist, train now, or
wait for a stage."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field

from torch import nn

from trainers.freezing.rules import RuleEffect
from trainers.freezing.selectors import tied_aliases
from trainers.zero3 import param_numel

NO_TOWER = "(no tower)"


@dataclass
class ModuleCount:
    module: str
    total: int
    trainable: int
    scheduled: int = 0


@dataclass
class FreezeReport:
    """Counts are of unique tensors: a tied LM head and its embedding count once."""

    modules: list[ModuleCount]
    rules: list[RuleEffect] = field(default_factory=list)
    tied: dict[str, list[str]] = field(default_factory=dict)
    # the same counts per tower the family declares (`FamilyEntry.towers`), in its order; empty when it
    # declares none. A chat VLM's modules are all under `model.`: its towers are what tell them apart.
    towers: list[ModuleCount] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(m.total for m in self.modules)

    @property
    def trainable(self) -> int:
        return sum(m.trainable for m in self.modules)

    @property
    def scheduled(self) -> int:
        return sum(m.scheduled for m in self.modules)

    @property
    def trainable_ratio(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "trainable": self.trainable,
            "scheduled": self.scheduled,
            "trainable_ratio": self.trainable_ratio,
            "modules": [asdict(m) for m in self.modules],
            "rules": [asdict(r) for r in self.rules],
            "tied": self.tied,
            "towers": [asdict(t) for t in self.towers],
        }

    def render(self) -> str:
        lines = _table(
            "module", [*self.modules, ModuleCount("TOTAL", self.total, self.trainable, self.scheduled)]
        )
        for r in self.rules:
            lines.append(f"rule: {r.rule} -> {r.tensors} tensors, {r.params:,} params")
        for name, aliases in self.tied.items():
            lines.append(f"tied: {name} is shared with {', '.join(aliases)} (counted once)")
        return "\n".join(lines)

    def render_towers(self) -> str:
        """The per-tower table ('' when the family declares no towers)."""
        return "\n".join(_table("tower", self.towers)) if self.towers else ""


def _table(first: str, counts: list[ModuleCount]) -> list[str]:
    rows = [(first, "total", "trainable", "scheduled", "trainable %", "frozen")]
    for m in counts:
        pct = 100.0 * m.trainable / m.total if m.total else 0.0
        frozen = m.total - m.trainable - m.scheduled
        rows.append(
            (
                m.module,
                f"{m.total:,}",
                f"{m.trainable:,}",
                f"{m.scheduled:,}",
                f"{pct:.2f}",
                f"{frozen:,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def build_freeze_report(
    model: nn.Module,
    rules: list[RuleEffect] | None = None,
    scheduled: Collection[str] = (),
    depth: int = 1,
    towers: Collection[str] = (),
    tower_of: Callable[[str], str | None] | None = None,
) -> FreezeReport:
    """Group unique parameters by their first `depth` name components, and by tower.

    `scheduled` names parameters that require grad but stay gated until an unfreezing stage: they are
    counted as scheduled, not trainable. `towers` / `tower_of`: the family's tower names and the tower of a
    parameter name (`FamilyEntry.tower_of`); a parameter in none (an added module) is counted under
    `(no tower)`, so the tower rows always add up to the total.
    """
    counts: dict[str, ModuleCount] = {}
    by_tower = {t: ModuleCount(t, 0, 0) for t in towers}
    scheduled = set(scheduled)
    for name, param in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        rows = [counts.setdefault(key, ModuleCount(key, 0, 0))]
        if by_tower and tower_of is not None:
            tower = tower_of(name) or NO_TOWER
            rows.append(by_tower.setdefault(tower, ModuleCount(tower, 0, 0)))
        numel = param_numel(param)
        for row in rows:
            row.total += numel
            if name in scheduled:
                row.scheduled += numel
            elif param.requires_grad:
                row.trainable += numel
    return FreezeReport(
        list(counts.values()), list(rules or []), tied_aliases(model), list(by_tower.values())
    )
