"""Budget -> per-module LoRA ranks.

A module of shape d_in × d_out at rank r costs r·(d_in + d_out) parameters. Every
module gets the same base rank; some get +1 so that the total lands as close to the
budget as any such allocation can (found exactly by a subset-sum over the module
sizes), and those +1s are spread evenly over layers and matrices.
"""

from collections import defaultdict
from collections.abc import Sequence

from lora_ablate.errors import ConfigError


def allocate_ranks(
    sizes: Sequence[int], budget: int, positions: Sequence[tuple[int, int]] | None = None
) -> list[int]:
    """Ranks (base or base+1) for modules of cost `sizes[i]` = d_in + d_out per rank.

    `positions[i]` = (layer, matrix index) of module i: within each size the +1s are
    spread so that counts per layer and per matrix each differ by at most one.
    Without positions every module counts as its own layer.
    """
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"module sizes must be positive, got {list(sizes)}")
    minimum = sum(sizes)
    if budget < minimum:
        raise ConfigError(
            f"a budget of {budget:,} trainable parameters is below the minimum of {minimum:,} "
            f"that rank 1 on each of the {len(sizes)} adapted modules costs; use a budget of at "
            "least that (budget.params or a larger reference rank) or adapt fewer matrices."
        )
    base, remainder = divmod(budget, minimum)
    positions = list(positions) if positions is not None else [(i, 0) for i in range(len(sizes))]
    groups: dict[int, list[int]] = defaultdict(list)  # size -> module indices
    for index, size in enumerate(sizes):
        groups[size].append(index)
    counts = _closest_subset_counts({size: len(members) for size, members in groups.items()}, remainder)
    ranks = [base] * len(sizes)
    for size, members in groups.items():
        for index in _spread(members, counts[size], positions):
            ranks[index] += 1
    return ranks


def _closest_subset_counts(available: dict[int, int], target: int) -> dict[int, int]:
    """How many modules of each size to give +1 so their summed sizes are closest to
    `target` (ties: the smaller total). Bounded subset-sum on big-int bitsets, with
    each size's count split into powers of two; exact and fast for real models."""
    cap = sum(size * count for size, count in available.items())
    mask = (1 << (cap + 1)) - 1
    items: list[tuple[int, int]] = []  # (size, multiplicity)
    for size, count in sorted(available.items()):
        chunk = 1
        while count > 0:
            take = min(chunk, count)
            items.append((size, take))
            count -= take
            chunk *= 2
    reachable = [1]  # reachable[i]: bit s set when sum s is reachable with items[:i]
    for size, take in items:
        reachable.append((reachable[-1] | (reachable[-1] << (size * take))) & mask)
    total = _nearest_set_bit(reachable[-1], target)
    counts = dict.fromkeys(available, 0)
    for i in range(len(items), 0, -1):
        if not (reachable[i - 1] >> total) & 1:
            size, take = items[i - 1]
            counts[size] += take
            total -= size * take
    return counts


def _nearest_set_bit(bits: int, target: int) -> int:
    below = (bits & ((1 << (target + 1)) - 1)).bit_length() - 1  # bit 0 is always set
    above_bits = bits >> target
    above = target + (above_bits & -above_bits).bit_length() - 1 if above_bits else None
    if above is None or target - below <= above - target:
        return below
    return above


def _spread(members: list[int], count: int, positions: Sequence[tuple[int, int]]) -> list[int]:
    """`count` of `members`: layers get counts differing by at most one (the larger ones
    evenly spaced over depth), and within layers the matrices are taken in turn with one
    counter running across layers, so matrix counts differ by at most one too."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for index in sorted(members, key=lambda i: positions[i]):
        by_layer[positions[index][0]].append(index)
    layers = sorted(by_layer)
    base, extra = divmod(count, len(layers))
    larger = {layers[(2 * k + 1) * len(layers) // (2 * extra)] for k in range(extra)}
    quota = {layer: min(base + (layer in larger), len(by_layer[layer])) for layer in layers}
    short = count - sum(quota.values())  # only when layers hold different numbers of modules
    for layer in layers:
        spare = min(short, len(by_layer[layer]) - quota[layer])
        quota[layer] += spare
        short -= spare
    chosen, turn = [], 0
    for layer in layers:
        modules = by_layer[layer]
        for _ in range(quota[layer]):
            chosen.append(modules[turn % len(modules)])
            turn += 1
    return chosen
