"""What a run leaves behind: summary JSON, plots, W&B (offline by default)."""
