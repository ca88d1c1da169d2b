"""The logical matrices, the `targets` config options, and the one rule that names a set
of matrices after the option it equals. No torch here: the planner applies the rule
with an architecture's expansion of `ffn` (model.architectures.target_set_label), and a
record reader without an architecture applies it to the requested names as written."""

from collections.abc import Callable, Iterable, Sequence

from lora_ablate.errors import ConfigError

MATRICES = ("q", "k", "v", "o", "ffn_gate", "ffn_up", "ffn_down")
FFN_MATRICES = ("ffn_gate", "ffn_up", "ffn_down")
FFN = "ffn"  # stands for every FFN matrix the architecture has

# The `targets` options, before `ffn` is expanded: the one source; conf/targets/NAME.yaml
# restates each for Hydra and tests/test_targets.py checks that they agree.
TARGET_SETS: dict[str, tuple[str, ...]] = {
    "q": ("q",),
    "k": ("k",),
    "v": ("v",),
    "o": ("o",),
    "qk": ("q", "k"),
    "qv": ("q", "v"),
    "qkv": ("q", "k", "v"),
    "qkvo": ("q", "k", "v", "o"),
    "ffn": (FFN,),
    "qkv_ffn": ("q", "k", "v", FFN),
    "all": ("q", "k", "v", "o", FFN),
}
_ORDER = {name: i for i, name in enumerate((*MATRICES, FFN))}


def target_set_name(matrices: Iterable[str], expand: Callable[[Sequence[str]], Iterable[str]]) -> str:
    """The `targets` option whose matrices, expanded by `expand`, equal `matrices` (an
    option `expand` rejects with ConfigError does not apply); else the matrices in
    canonical order joined by '+'."""
    wanted = set(matrices)
    for option, abstract in TARGET_SETS.items():
        try:
            if set(expand(abstract)) == wanted:
                return option
        except ConfigError:
            continue
    return "+".join(sorted(wanted, key=lambda m: (_ORDER.get(m, len(_ORDER)), m)))


def as_written(names: Sequence[str]) -> list[str]:
    """Requested names with option names replaced by their matrices, `ffn` kept as `ffn`:
    the expansion for a reader that does not know the architecture."""
    out: list[str] = []
    for name in names:
        out += as_written(TARGET_SETS[name]) if name in TARGET_SETS and TARGET_SETS[name] != (name,) else [name]
    return out
