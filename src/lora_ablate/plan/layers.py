"""`targets.layers`: which transformer layers a target set adapts.

Accepted: `all` (default); a band `bottom`, `middle` or `top` (thirds of the layers: each
gets floor(N/3) layers, a remainder of one goes to the top band and a remainder of two to
the top and bottom bands, so 32 layers split 11/10/11 and 2 layers 1/0/1); a layer index;
a list of indices (`targets.layers=[0,1,5]`); or an inclusive range string
(`targets.layers=0-3`, also inside a list: `[0-3,8]`).
"""

import re
from collections.abc import Sequence
from typing import Any

from lora_ablate.errors import ConfigError

BANDS = ("bottom", "middle", "top")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def band_layers(band: str, count: int) -> list[int]:
    """The layers of `band` among layers 0..count-1."""
    third, extra = divmod(count, 3)
    bottom = third + (extra == 2)
    top = third + (extra >= 1)
    return {
        "bottom": list(range(0, bottom)),
        "middle": list(range(bottom, count - top)),
        "top": list(range(count - top, count)),
    }[band]


def select_layers(request: Any, count: int) -> list[int]:
    """Sorted layer indices that `request` selects among layers 0..count-1."""
    valid = (
        f"valid values are all, {', '.join(BANDS)}, a layer index or list of indices in 0..{count - 1}, "
        f"or a range such as 0-{max(count - 1, 0)} (the model has {count} layers)"
    )
    if isinstance(request, str) and request.strip().lower() in ("all", *BANDS):
        name = request.strip().lower()
        if name == "all":
            return list(range(count))
        layers = band_layers(name, count)
        if not layers:
            raise ConfigError(
                f"targets.layers={name} selects no layer: the model has only {count} layers, so the "
                f"{name} third is empty; {valid}."
            )
        return layers
    items = list(request) if isinstance(request, Sequence) and not isinstance(request, str) else [request]
    if not items:
        raise ConfigError(f"targets.layers is an empty list; {valid}.")
    chosen: set[int] = set()
    for item in items:
        chosen.update(_indices(item, count, valid))
    return sorted(chosen)


def _indices(item: Any, count: int, valid: str) -> list[int]:
    if isinstance(item, bool):
        raise ConfigError(f"targets.layers value {item!r} is not a layer; {valid}.")
    if isinstance(item, int):
        indices = [item]
    elif isinstance(item, str) and item.strip().isdigit():
        indices = [int(item)]
    elif isinstance(item, str) and (match := _RANGE.match(item)):
        start, stop = int(match.group(1)), int(match.group(2))
        if start > stop:
            raise ConfigError(f"targets.layers range '{item}' runs backwards; write it low-high, e.g. {stop}-{start}; {valid}.")
        indices = list(range(start, stop + 1))
    else:
        raise ConfigError(f"targets.layers value {item!r} is not understood; {valid}.")
    outside = [i for i in indices if not 0 <= i < count]
    if outside:
        raise ConfigError(f"targets.layers value {item!r} names layer {outside[0]}, outside the range 0..{count - 1}; {valid}.")
    return indices
