"""Trainer callbacks: small hooks, one job each (early stopping, per-epoch metrics, recipe logging)."""
