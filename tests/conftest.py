"""Fixtures shared by the tests; helper functions live in helpers.py and the command line
is started through cli_helpers.py."""

from pathlib import Path

import pytest

from helpers import ARCHS, PlanCache, save_config


@pytest.fixture(scope="session")
def arch_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every architecture of ARCHS saved as a config.json folder."""
    root = tmp_path_factory.mktemp("archs")
    return {key: save_config(root / key, a.model_type, **a.config) for key, a in ARCHS.items()}


@pytest.fixture(scope="session")
def plan_cache() -> PlanCache:
    return PlanCache()
