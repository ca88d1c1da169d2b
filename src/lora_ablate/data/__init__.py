"""Data: packaged assets (fetched and verified), tasks, deterministic splits, the tokenised-split cache."""
