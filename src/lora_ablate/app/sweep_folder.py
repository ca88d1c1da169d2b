"""A sweep's folder, checked before anything is written into it: a new or empty folder, or
one that an earlier lora-ablate sweep wrote (its manifest.json and only what sweeps write)
is used; anything else is refused unless the user says to reuse it (`sweep_reuse=true`),
so that `hydra.sweep.dir=` pointed at the wrong folder never overwrites someone's files."""

from pathlib import Path

from lora_ablate.errors import ConfigError
from lora_ablate.records import RECORD_GLOB
from lora_ablate.report.sweep_manifest import MANIFEST_NAME, read_manifest

# What a sweep writes at the top of its folder besides its run folders.
SWEEP_FILES = frozenset({MANIFEST_NAME, "multirun.yaml", "report", ".submitit"})
SHOWN = 5  # unknown entries named in the error


def check_sweep_folder(sweep_dir: Path, run_dirs: list[str], reuse: bool) -> None:
    """ConfigError when sweep_dir holds files that lora-ablate did not write (unless
    `reuse`), or a manifest.json that is not a sweep manifest (always: it would be
    overwritten)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.exists():
        return
    if not sweep_dir.is_dir():
        raise ConfigError(f"The sweep folder {sweep_dir} is a file, not a folder; choose another "
                          "folder with hydra.sweep.dir=... (or another sweep_name).")
    entries = sorted(entry.name for entry in sweep_dir.iterdir())
    if not entries:
        return
    manifest = read_manifest(sweep_dir)  # ConfigError naming the problem when malformed
    if reuse:
        return
    if manifest is None:
        raise ConfigError(
            f"The sweep folder {sweep_dir} is not empty ({_some(entries)}) and has no {MANIFEST_NAME}, so "
            "lora-ablate did not make it; a sweep writes its report, manifest and run folders there and "
            "would overwrite files of the same name. Choose another folder (hydra.sweep.dir=... or "
            "sweep_name=...), or add sweep_reuse=true to write into this one anyway."
        )
    ours = SWEEP_FILES | {_top(d) for d in (*manifest.run_dirs, *run_dirs)}
    unknown = [name for name in entries
               if name not in ours and not _temporary(name) and not _run_folder(sweep_dir / name)]
    if unknown:
        raise ConfigError(
            f"The sweep folder {sweep_dir} holds {len(unknown)} entries that no lora-ablate sweep wrote "
            f"({_some(unknown)}); its records and report would mix with them. Choose another folder "
            "(hydra.sweep.dir=... or sweep_name=...), move them out, or add sweep_reuse=true to write "
            "into this folder anyway."
        )


def _top(run_dir: str) -> str:
    return Path(run_dir).parts[0] if Path(run_dir).parts else run_dir


def _run_folder(path: Path) -> bool:
    """A run's folder by another name (a custom hydra.sweep.subdir): Hydra's .hydra/ or a record."""
    return path.is_dir() and not path.is_symlink() and (
        (path / ".hydra").is_dir() or any(path.glob(RECORD_GLOB)))


def _temporary(name: str) -> bool:
    """A write-then-rename temporary file left by a killed process (files.write_atomic)."""
    return name.startswith(".") and name.endswith(".tmp")


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
