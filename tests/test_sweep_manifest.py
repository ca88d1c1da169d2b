"""SWEEP_DIR/manifest.json through its one type: what the sweeper writes is what the report
reads, a rerun merges its cells into the listed ones, and a broken file is one clear error."""

import json

import pytest

from lora_ablate.app.sweeper import write_manifest
from lora_ablate.errors import ConfigError
from lora_ablate.identity import run_dirname
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.sweep_manifest import MANIFEST_NAME, Manifest, ManifestCell, read_manifest

PLAN = SeedPlan((0, 1), 4, 0.01, 0.2, 0.05)


def test_a_manifest_reads_back_as_written(tmp_path):
    written = Manifest("s", "2026-01-01T00:00:00+00:00",
                       (ManifestCell("a", ("seed=0",), "h1", 1), ManifestCell("b/c", (), None, 2)),
                       ("-m", "seed=0,1"), PLAN)
    written.write(tmp_path)
    read = read_manifest(tmp_path)
    assert read == written
    assert read.run_dirs == ("a", "b/c")
    assert read.config_hashes == {"a": "h1"} and read.stages == {"a": 1, "b/c": 2}


def test_a_folder_without_a_manifest_has_none_and_a_broken_one_is_named(tmp_path):
    assert read_manifest(tmp_path) is None
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"cells": [{"overrides": []}]}))  # no run_dir
    with pytest.raises(ConfigError, match=r"manifest\.json cannot be read \(KeyError: 'run_dir'\)"):
        read_manifest(tmp_path)


def test_new_cells_come_after_the_listed_ones_which_keep_their_overrides():
    listed = Manifest("s", None, (ManifestCell("a", ("x=1",), "old", 1), ManifestCell("b", ("x=2",))))
    merged = listed.with_cells([ManifestCell("c", ("x=3",), "h3"), ManifestCell("a", ("other",), "new"),
                                ManifestCell("b", ("x=2",), None, 2)])
    assert merged.cells == (ManifestCell("a", ("x=1",), "new", 1), ManifestCell("b", ("x=2",), None, 2),
                            ManifestCell("c", ("x=3",), "h3"))


def test_what_the_sweeper_writes_the_report_reads(tmp_path):
    cells = [["targets=qv", "seed=0"], ["targets=qk", "seed=0"]]
    dirs = [run_dirname(c) for c in cells]
    write_manifest(tmp_path, "s", ["-m", "targets=qv,qk"], cells, {dirs[0]: "h0", dirs[1]: "h1"},
                   stage=1, seed_plan=PLAN)
    first = read_manifest(tmp_path)
    write_manifest(tmp_path, "s", [], [cells[1], ["targets=qk", "seed=2"]], {dirs[1]: "h1b"}, stage=2)
    second = read_manifest(tmp_path)
    assert first.config_hashes == {dirs[0]: "h0", dirs[1]: "h1"}
    assert second.created == first.created and second.seed_plan == PLAN  # kept from the first write
    assert second.config_hashes == {dirs[0]: "h0", dirs[1]: "h1b"}
    assert second.stages == {dirs[0]: 1, dirs[1]: 2, run_dirname(["targets=qk", "seed=2"]): 2}
    assert [c.overrides for c in second.cells] == [tuple(cells[0]), tuple(cells[1]), ("targets=qk", "seed=2")]
