"""Hydra only instantiates sweepers defined under the `hydra_plugins` namespace package."""

from lora_ablate.app import sweeper


class ValidatingSweeper(sweeper.ValidatingSweeper):
    """lora_ablate.app.sweeper.ValidatingSweeper, registered where Hydra looks for plugins."""
