"""The console scripts of installs made before the entry points moved to lora_ablate.app.cli."""

from lora_ablate.app.cli import main, report_main  # noqa: F401
