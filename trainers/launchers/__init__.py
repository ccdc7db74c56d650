"""Building launcher commands (accelerate, torchrun, deepspeed); nothing here imports training code."""
