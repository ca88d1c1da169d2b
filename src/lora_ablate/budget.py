"""Budget -> per-module LoRA ranks.

A module of shape d_in × d_out at rank r costs r·(d_in + d_out) parameters. Every
module gets the same base rank; some get +1 so that the total lands as close to the
budget as any such allocation can (found exactly by a subset-sum over the module
sizes), and those +1s are spread evenly over layers and matrices.
"""

from collections import defaultdict
from collections.abc import Sequence

from .errors import ConfigError


def allocate_ranks(sizes: Sequence[int], budget: int, spread_order: Sequence[int] | None = None) -> list[int]:
    """Ranks (base or base+1) for modules of cost `sizes[i]` = d_in + d_out per rank.

    `spread_order` lists module indices in the order +1s should be spread over
    (e.g. interleaving layers and matrices); +1s go to evenly spaced positions in it.
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
    order = list(spread_order) if spread_order is not None else list(range(len(sizes)))
    groups: dict[int, list[int]] = defaultdict(list)  # size -> module indices in spread order
    for index in order:
        groups[sizes[index]].append(index)
    counts = _closest_subset_counts({size: len(members) for size, members in groups.items()}, remainder)
    ranks = [base] * len(sizes)
    for size, members in groups.items():
        for index in _evenly_spaced(members, counts[size]):
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


def _evenly_spaced(members: list[int], count: int) -> list[int]:
    n = len(members)
    return [members[(2 * k + 1) * n // (2 * count)] for k in range(count)]
