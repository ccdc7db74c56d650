"""Metrics shared by several tasks (box mAP for detection, grounding and dense captioning)."""
