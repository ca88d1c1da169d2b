"""What a cache folder held when it was made: the sha256 and stat stamp of every file and
the target of every link, written into the folder before it is renamed into place, and
checked whenever the folder is used.

A file whose stamp (size, mtime, inode, ctime) is unchanged is taken as unchanged, as the
download markers are: ctime cannot be set back, so an edit is hashed; a copied cache (new
inodes) is hashed once and its stamps renewed."""

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lora_ablate.cache.digests import Stamp, sha256_of, stamp_of
from lora_ablate.cache.root import write_json_atomic

DIGEST_FILE = ".lora-ablate.sha256"  # the key the folder was made for, written last
MANIFEST_FILE = ".lora-ablate.manifest.json"
MANIFEST_VERSION = 1
SHOWN = 3  # changed paths named in a message


@dataclass(frozen=True)
class Entry:
    """One path in the folder: a file (digest and stamp), a link (target) or anything else."""

    kind: str  # "file" | "link" | "other"
    sha256: str | None = None
    stamp: Stamp | None = None
    target: str | None = None

    def same_content(self, other: "Entry") -> bool:
        return (self.kind, self.sha256, self.target) == (other.kind, other.sha256, other.target)


Manifest = dict[str, Entry]  # relative POSIX path -> entry


def write_manifest(folder: Path) -> Manifest:
    """Hash everything in `folder` and record it there."""
    manifest = {rel: _entry(path, st) for rel, path, st in _walk(folder)}
    _save(folder, manifest)
    return manifest


def folder_problem(folder: Path) -> str | None:
    """None if `folder` holds exactly what its manifest records; else what differs, as a
    phrase for a message ("'a/b.txt' changed")."""
    try:
        recorded = _load(folder)
    except FileNotFoundError:
        return "it has no digest manifest (made by an earlier version of lora-ablate)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its digest manifest is unreadable ({err})"
    try:
        problem, renewed = _compare(folder, recorded, trust_stamps=True)
    except OSError as err:  # moved or removed while we looked
        return f"it could not be read ({err})"
    if problem is None and renewed:
        try:
            _save(folder, recorded | renewed)
        except OSError:
            pass  # a read-only cache: the files are hashed again next time
    return problem


def differences(folder: Path, manifest: Manifest) -> str | None:
    """None if `folder` holds the same content as `manifest` records (every file hashed)."""
    try:
        return _compare(folder, manifest, trust_stamps=False)[0]
    except OSError as err:
        return f"it could not be read ({err})"


def _compare(folder: Path, recorded: Manifest, *, trust_stamps: bool) -> tuple[str | None, Manifest]:
    changed, renewed = [], {}
    present = {rel: (path, st) for rel, path, st in _walk(folder)}
    for rel in sorted(recorded.keys() | present.keys()):
        want, found = recorded.get(rel), present.get(rel)
        if want is None or found is None:
            changed.append(f"{rel!r} {'added' if want is None else 'removed'}")
            continue
        path, st = found
        if trust_stamps and want.kind == "file" and want.stamp == stamp_of(st):
            continue
        got = _entry(path, st)
        if not got.same_content(want):
            changed.append(f"{rel!r} changed")
        elif got.kind == "file":
            renewed[rel] = got
    if not changed:
        return None, renewed
    more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
    return ", ".join(changed[:SHOWN]) + more, renewed


def _walk(folder: Path, prefix: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative POSIX path, path, lstat) of everything below `folder` but directories
    (links to them included) and the folder's own bookkeeping files. Strings and one
    lstat per entry: a 2,000-file corpus is checked in milliseconds."""
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                yield from _walk(entry.path, f"{prefix}{entry.name}/")
            elif prefix or not _is_bookkeeping(entry.name):
                yield f"{prefix}{entry.name}", entry.path, st


def _is_bookkeeping(name: str) -> bool:
    # write_json_atomic's temporary file while a manifest is renewed: ".<name>.<random>.tmp"
    return name in (DIGEST_FILE, MANIFEST_FILE) or (name.startswith(f".{MANIFEST_FILE}.") and name.endswith(".tmp"))


def _entry(path: str, st: os.stat_result) -> Entry:
    """`st`: the lstat taken before hashing, so a write while hashing shows as a change."""
    if stat.S_ISLNK(st.st_mode):
        return Entry("link", target=os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return Entry("file", sha256=sha256_of(Path(path)), stamp=stamp_of(st))
    return Entry("other")


def _save(folder: Path, manifest: Manifest) -> None:
    entries = {rel: {k: v for k, v in vars(e).items() if v is not None} for rel, e in sorted(manifest.items())}
    write_json_atomic(folder / MANIFEST_FILE, {"version": MANIFEST_VERSION, "entries": entries}, indent=None)


def _load(folder: Path) -> Manifest:
    data = json.loads((folder / MANIFEST_FILE).read_text())
    if data["version"] != MANIFEST_VERSION:
        raise ValueError(f"version {data['version']!r}, expected {MANIFEST_VERSION}")
    return {rel: Entry(**fields) for rel, fields in data["entries"].items()}
