"""Top-down keypoint estimation (ViTPose): heatmap targets and loss, PCK / pixel error / OKS AP.

Only the task's building blocks exist so far (`heatmaps.py`, `metrics.py`); the `pose` task itself (data,
crops, recipe) and the ViTPose family are not built yet, so nothing registers it.
"""
