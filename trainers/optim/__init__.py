"""Optimizer-side pieces: declared parameter groups and optimizer-state surgery for stages."""
