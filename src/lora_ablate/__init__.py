"""lora-ablate: budget-matched LoRA target-matrix ablations."""
__version__ = "0.1.0"
