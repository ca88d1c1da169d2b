"""Configuration: the typed schema behind conf/ (the Hydra glue is in lora_ablate.app)."""
