"""SWEEP_DIR/manifest.json: the one type the sweeper writes and the report (and the sweep
folder check) reads. It lists the sweep's cells by run folder with the config hash that is
current for each, which decides which of the folder's records the report uses, and, for an
adaptive sweep, the seeds design and each cell's stage."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lora_ablate.errors import ConfigError
from lora_ablate.files import write_atomic
from lora_ablate.report.staged import SeedPlan

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ManifestCell:
    """One cell: its run folder relative to the sweep folder (as hydra.sweep.subdir names
    it) and the overrides that made it."""

    run_dir: str
    overrides: tuple[str, ...] = ()
    config_hash: str | None = None  # of the cell's current config; None: any record counts
    stage: int | None = None  # adaptive sweeps: the stage that ran the cell

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"overrides": list(self.overrides), "run_dir": self.run_dir}
        if self.config_hash is not None:
            data["config_hash"] = self.config_hash
        if self.stage is not None:
            data["stage"] = self.stage
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ManifestCell":
        # Falsy hashes and stages are absent ones (stage numbers start at 1).
        return cls(str(data["run_dir"]).strip("/"), tuple(str(o) for o in data.get("overrides") or ()),
                   str(data["config_hash"]) if data.get("config_hash") else None,
                   int(data["stage"]) if data.get("stage") else None)


@dataclass(frozen=True)
class Manifest:
    """The sweep's name, when it was first written, its command-line overrides, its cells
    (first listed first) and its adaptive-seeds design, when it used one."""

    sweep_name: str | None
    created: str | None
    cells: tuple[ManifestCell, ...] = ()
    overrides: tuple[str, ...] = ()
    seed_plan: SeedPlan | None = None

    @property
    def run_dirs(self) -> tuple[str, ...]:
        return tuple(cell.run_dir for cell in self.cells)

    @property
    def config_hashes(self) -> dict[str, str]:
        """Run folder -> its cell's current config hash (cells that have one)."""
        return {c.run_dir: c.config_hash for c in self.cells if c.config_hash is not None}

    @property
    def stages(self) -> dict[str, int]:
        """Run folder -> its stage (adaptive sweeps)."""
        return {c.run_dir: c.stage for c in self.cells if c.stage is not None}

    def with_cells(self, cells: Iterable[ManifestCell]) -> "Manifest":
        """These cells added after the ones listed; a cell already listed keeps its place
        and overrides and takes the new config hash and stage where they are given (a
        rerun brings hashes up to date)."""
        listed = {cell.run_dir: cell for cell in self.cells}
        for cell in cells:
            old = listed.get(cell.run_dir)
            if old is None:
                listed[cell.run_dir] = cell
            else:
                listed[cell.run_dir] = replace(
                    old, config_hash=old.config_hash if cell.config_hash is None else cell.config_hash,
                    stage=old.stage if cell.stage is None else cell.stage)
        return replace(self, cells=tuple(listed.values()))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sweep_name": self.sweep_name, "created": self.created,
                                "overrides": list(self.overrides),
                                "cells": [cell.to_json() for cell in self.cells]}
        if self.seed_plan is not None:
            data["adaptive"] = self.seed_plan.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        plan = SeedPlan.from_json(data["adaptive"]) if data.get("adaptive") else None
        return cls(data.get("sweep_name"), data.get("created"),
                   tuple(ManifestCell.from_json(c) for c in data.get("cells") or []),
                   tuple(str(o) for o in data.get("overrides") or ()), plan)

    def write(self, sweep_dir: Path) -> Path:
        """SWEEP_DIR/manifest.json, replaced whole (a killed write leaves the old one)."""
        return write_atomic(Path(sweep_dir) / MANIFEST_NAME, json.dumps(self.to_json(), indent=2) + "\n")


def read_manifest(sweep_dir: Path) -> Manifest | None:
    """The sweep's manifest, or None when it has none; ConfigError when it is unreadable."""
    path = Path(sweep_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(
            f"The sweep manifest {path} cannot be read ({type(err).__name__}: {err}). It "
            f"should be JSON with a 'cells' list of objects that each name a 'run_dir' "
            f"relative to the sweep folder (and, for adaptive seeds, an 'adaptive' object with "
            f"stage1_seeds, max_seeds, alpha_stage1, continue_p and alpha); fix or remove it "
            f"to report every record found."
        ) from None
