"""Florence-2 tasks from one JSONL: `<OD>`, `<DENSE_REGION_CAPTION>`, `<CAPTION_TO_PHRASE_GROUNDING>`.

Importing the package loads only the recipe dataclasses; the task itself (torch, PIL) is `TASK`, resolved on
use. `voc_to_jsonl` converts LabelImg VOC XML; `fabric` generates the shipped synthetic defect set.
"""

from trainers.tasks.prompted_generation.config import PromptedData, PromptedEval

TASK = "trainers.tasks.prompted_generation.task:PromptedGenerationTask"

__all__ = ["TASK", "PromptedData", "PromptedEval"]
