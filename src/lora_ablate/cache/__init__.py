"""The on-disk cache shared by every run (and by users of one machine or file system),
the way `datasets` and the hub cache files for online users. Layout under `cache_root()`:

    downloads/<file>                    verified wheels and sdists (downloads.py)
    downloads/<slug>.verified.json      requirement -> file, digest and stat (written last)
    unpacked/<archive sha256>/          archives extracted once, keyed by content (unpack.py)
    converted/<key>/                    other content-keyed folders (folders.py), e.g. GGUF copies
    encoded/<task>-<key>.json           tokenised splits, with the digest of their content
    manual/                             copies placed by hand for machines without PyPI
    locks/                              lock files (locks.py)

Every entry records a digest of what it holds when it is made and is checked against it
when it is used (manifest.py, json_entries.py); one that no longer matches is made again.
"""

from lora_ablate.cache.root import CACHE_ENV, cache_root

__all__ = ["CACHE_ENV", "cache_root"]
