"""Data: one module per task source, tasks, deterministic splits, encoding, the tokenised-split cache."""
