"""The one exception type a user should ever see from lora-ablate."""


class ConfigError(ValueError):
    """Bad user input, reported as one paragraph that names the bad value and what is valid.

    Raised before any training starts; the command-line entry points print the message
    (no traceback unless HYDRA_FULL_ERROR=1) and exit non-zero.
    """
