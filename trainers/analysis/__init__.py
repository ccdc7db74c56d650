"""Analysis commands: which layers the loss reaches (`importance`), how far training moved each module
(`param_change`), one-key ablation sweeps (`ablation`, behind `launch.py --ablate`) and the LoRA-vs-full
report (`lora_vs_full`, which can train both runs first)."""
