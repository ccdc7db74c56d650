"""Analysis commands: which layers the loss reaches (`importance`), how far training moved each module
(`param_change`), and one-key ablation sweeps (`ablation`, behind `launch.py --ablate`)."""
