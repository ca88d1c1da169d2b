"""Cache entries are checked against the digest written when they were made: an edited,
added or removed file in `unpacked/` (or any content-keyed folder) and an edited file in
`encoded/` are never used; the entry is made again from its source, with a warning."""

import json
import logging
import os
import re
import zipfile
from pathlib import Path

import pytest

from lora_ablate.cache import manifest, unpack
from lora_ablate.cache.json_entries import EntryMismatch, read_json_entry, write_json_entry
from lora_ablate.cache.locks import locked
from lora_ablate.cache.manifest import DIGEST_FILE, MANIFEST_FILE
from lora_ablate.cache.unpack import unpacked
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data import encoded
from lora_ablate.errors import ConfigError
from lora_ablate.model.loading import byte_tokenizer

LABELS = b"id\ttext\tlabel\n1\tfine\t1\n2\tdull\t0\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(tmp_path / "cache"))
    encoded._memo.clear()
    yield tmp_path / "cache"
    encoded._memo.clear()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "corpus-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("corpus/labels.tsv", LABELS)
        zf.writestr("corpus/README", b"a corpus")
    return path


def flip_a_label(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"fine\t1", b"fine\t0"))


def add_a_file(folder: Path) -> None:
    (folder / "corpus" / "extra.tsv").write_bytes(b"3\tplanted\t1\n")


def remove_a_file(folder: Path) -> None:
    (folder / "corpus" / "README").unlink()


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda folder: flip_a_label(folder / "corpus" / "labels.tsv"), "'corpus/labels.tsv' changed"),
        (add_a_file, "'corpus/extra.tsv' added"),
        (remove_a_file, "'corpus/README' removed"),
    ],
    ids=["edited", "added", "removed"],
)
def test_a_tampered_unpacked_folder_is_made_again_with_a_warning(cache, archive, caplog, tamper, named) -> None:
    folder = unpacked(archive)
    tamper(folder)
    with caplog.at_level(logging.WARNING, logger="lora_ablate.cache.folders"):
        again = unpacked(archive)
    assert again == folder and (folder / "corpus" / "labels.tsv").read_bytes() == LABELS
    assert sorted(p.name for p in (folder / "corpus").iterdir()) == ["README", "labels.tsv"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(folder) in warning and named in warning and "made again" in warning
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch or old copy left


def test_an_untouched_folder_is_not_hashed_again(cache, archive, monkeypatch) -> None:
    folder = unpacked(archive)
    monkeypatch.setattr(manifest, "sha256_of", lambda path: pytest.fail(f"{path} hashed although unchanged"))
    monkeypatch.setattr(unpack, "extract", lambda *a: pytest.fail("extracted again"))
    assert unpacked(archive) == folder


def test_a_copied_but_unchanged_file_is_hashed_once_and_kept(cache, archive, monkeypatch) -> None:
    folder = unpacked(archive)
    labels = folder / "corpus" / "labels.tsv"
    copy = labels.with_suffix(".tmp")
    copy.write_bytes(labels.read_bytes())
    os.replace(copy, labels)  # same content, new inode and ctime: as after copying a cache
    monkeypatch.setattr(unpack, "extract", lambda *a: pytest.fail("extracted again"))
    hashed: list[str] = []
    real = manifest.sha256_of
    monkeypatch.setattr(manifest, "sha256_of", lambda path: hashed.append(Path(path).name) or real(path))
    assert unpacked(archive) == folder and hashed == ["labels.tsv"]
    assert unpacked(archive) == folder and hashed == ["labels.tsv"]  # its stamp was renewed


@pytest.mark.parametrize(("legacy_content", "kept"), [(LABELS, True), (LABELS.replace(b"\t1\n", b"\t0\n"), False)])
def test_a_folder_from_before_manifests_is_checked_against_a_fresh_copy(cache, archive, legacy_content, kept) -> None:
    folder = unpacked(archive)
    (folder / MANIFEST_FILE).unlink()  # as an earlier version left it
    (folder / "corpus" / "labels.tsv").write_bytes(legacy_content)
    inode = (folder / "corpus" / "labels.tsv").stat().st_ino
    assert unpacked(archive) == folder and (folder / "corpus" / "labels.tsv").read_bytes() == LABELS
    assert ((folder / "corpus" / "labels.tsv").stat().st_ino == inode) is kept  # kept in place when right
    assert (folder / MANIFEST_FILE).is_file() and (folder / DIGEST_FILE).read_text().strip() == folder.name


def test_a_damaged_manifest_means_the_folder_is_checked_again(cache, archive) -> None:
    folder = unpacked(archive)
    (folder / MANIFEST_FILE).write_text("{not json")
    flip_a_label(folder / "corpus" / "labels.tsv")
    assert (unpacked(archive) / "corpus" / "labels.tsv").read_bytes() == LABELS


# --- single-file entries (the tokenised splits) -----------------------------------------


def test_json_entries_round_trip_and_refuse_edits(tmp_path: Path) -> None:
    path = tmp_path / "entry.json"
    content = {"labels": [0, 1, 1], "names": ["neg", "pos"], "text": "ünïcode"}
    write_json_entry(path, content)
    assert read_json_entry(path) == content and json.loads(path.read_text())["content"] == content  # plain JSON
    path.write_text(path.read_text().replace("[0,1,1]", "[1,1,1]"))
    with pytest.raises(EntryMismatch, match="does not match the sha256"):
        read_json_entry(path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(EntryMismatch, match="truncated"):
        read_json_entry(path)
    with pytest.raises(FileNotFoundError):
        read_json_entry(tmp_path / "missing.json")


def test_edited_tokenised_splits_are_made_again(cache, tmp_path, caplog) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(60)))
    task = TaskConfig(name="reviews", source="local", path=str(data), val_size=10, test_size=20, max_length=32)
    made = encoded.encoded_splits(task, byte_tokenizer(), "head")
    (path,) = (cache / "encoded").glob("reviews-*.json")
    text = path.read_text()
    flipped = re.sub(r'"labels":\[(\d)', lambda m: f'"labels":[{1 - int(m.group(1))}', text, count=1)
    assert flipped != text
    path.write_text(flipped)  # a flipped label; still valid JSON
    encoded._memo.clear()
    with caplog.at_level(logging.WARNING, logger="lora_ablate.data.encoded"):
        again = encoded.encoded_splits(task, byte_tokenizer(), "head")
    assert again == made and path.read_text() == text
    assert any(str(path) in r.getMessage() and "making them again" in r.getMessage() for r in caplog.records)


def test_a_task_name_never_leads_out_of_the_cache(cache, tmp_path) -> None:
    data = tmp_path / "r.csv"
    data.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(40)))
    task = TaskConfig(name="../../escaped", source="local", path=str(data), val_size=5, test_size=5)
    encoded.encoded_splits(task, byte_tokenizer(), "head")
    (path,) = (cache / "encoded").iterdir()
    assert path.name.startswith("_.._escaped-") and not list(tmp_path.glob("escaped*"))


# --- the lock ----------------------------------------------------------------------------


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(cache, tmp_path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (cache / "locks").mkdir(parents=True)
    (cache / "locks" / "download-x.lock").symlink_to(victim)
    with pytest.raises(ConfigError) as err, locked("download-x"):
        pass
    message = str(err.value)
    assert "\n" not in message and str(cache / "locks" / "download-x.lock") in message and "Delete it" in message
    assert victim.read_text() == "keep me"


def test_a_cache_that_cannot_be_written_is_one_paragraph_naming_the_folder(cache, archive, monkeypatch) -> None:
    from lora_ablate.cache import folders

    def read_only(name: str):
        raise PermissionError(13, "Permission denied", str(cache / "locks" / f"{name}.lock"))

    monkeypatch.setattr(folders, "locked", read_only)
    with pytest.raises(ConfigError) as err:
        unpacked(archive)
    message = str(err.value)
    assert "\n" not in message and str(cache / "unpacked") in message and "LORA_ABLATE_CACHE" in message
