"""lora-ablate: budget-matched LoRA target-matrix ablations.

The analysis API, imported lazily so that `import lora_ablate` stays light (no torch,
transformers or peft; those load only when a run is trained):

    from lora_ablate import load_sweep, summarize, plot_means, plot_curves, write_report
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "Sweep": "lora_ablate.report.sweep",
    "load_sweep": "lora_ablate.report.sweep",
    "summarize": "lora_ablate.report.sweep",
    "plot_means": "lora_ablate.report.api",
    "plot_differences": "lora_ablate.report.api",
    "plot_curves": "lora_ablate.report.api",
    "plot_depth": "lora_ablate.report.api",
    "write_report": "lora_ablate.report.render",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lora_ablate' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
