"""Data building blocks shared by every task: declared augmentation and Hugging Face `datasets` sources."""
