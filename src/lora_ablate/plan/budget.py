"""Budget -> per-module LoRA ranks.

A module of shape d_in × d_out at rank r costs r·(d_in + d_out) parameters. The rule:

    Every module gets the base rank floor(budget / rank-1 cost), and every matrix kind
    gets +1 on its proportional share of its modules (the leftover budget over the
    rank-1 cost, times the kind's module count), rounded up or down per kind so that
    the total lands closest to the budget (exact where possible), the roundings widened
    only if none comes within 1 % of it; within a kind the +1s are spread evenly over
    layers.

Why per kind: the cheapest modules give the finest steps towards the budget, so an
allocator that only chases the budget puts the +1s on them (on Llama-3-8B `all` it left
every FFN module at rank 1 and q, o at rank 2 in 28 of 32 layers), which tilts the very
attention-vs-FFN comparison the harness makes. Rounding each kind's ideal count up or down
keeps every kind's +1 share within one module of the same fraction, and the best rounding
is still within half the largest module of the budget. The closest total among the allowed
counts comes from a bounded subset-sum on big-int bitsets (exact, fast). A kind is a
(matrix, module size) pair; on every supported architecture a matrix has one shape in all
layers, so that is the matrix. With a single matrix there is nothing to balance and the
total is simply the closest any base/base+1 allocation can reach.
"""

from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from math import ceil, floor, gcd

from lora_ablate.errors import ConfigError


def allocate_ranks(
    sizes: Sequence[int], budget: int, positions: Sequence[tuple[int, int]] | None = None
) -> list[int]:
    """Ranks (base or base+1) for modules of cost `sizes[i]` = d_in + d_out per rank.

    `positions[i]` = (layer, matrix index) of module i. Without positions every module
    counts as its own layer and all share one matrix.
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
    kinds: dict[tuple[int, int], list[int]] = defaultdict(list)  # (matrix, size) -> module indices
    for index, size in enumerate(sizes):
        kinds[(positions[index][1], size)].append(index)
    order = sorted(kinds)
    several_matrices = len({matrix for matrix, _ in order}) > 1  # one matrix: nothing to balance
    slack = 0.01 * budget if several_matrices else None
    counts = fair_counts([size for _, size in order], [len(kinds[k]) for k in order], remainder, slack)
    ranks = [base] * len(sizes)
    for index in _place([kinds[kind] for kind in order], counts, positions):
        ranks[index] += 1
    return ranks


def fair_counts(sizes: Sequence[int], available: Sequence[int], target: int, slack: float | None) -> list[int]:
    """How many of the `available[j]` modules of size `sizes[j]` get +1, their sizes summing
    to about `target`. Without `slack` (one matrix) simply the closest total. With it, kind
    j's count stays within `level` modules of its proportional ideal x_j = available[j] · target / sum(sizes · available): level 1 allows
    floor(x_j) or ceil(x_j), which always gets within max(sizes)/2 of the target (the
    sizes added one by one from the all-floor total cross it in steps of at most that);
    the level grows only while the closest total stays more than `slack` parameters off.
    Within the allowed counts the total closest to `target` wins (ties: the smaller)."""
    unit = gcd(*sizes)  # every total is a multiple of it: work in those units (small bitsets)
    units = [s // unit for s in sizes]
    if slack is None:
        return _closest(units, [(0, n) for n in available], target, unit)
    ideal = Fraction(target, sum(s * n for s, n in zip(sizes, available)))
    lo, hi = 1, max(available) + 1  # at the top level every count is allowed
    while lo < hi:
        mid = (lo + hi) // 2
        windows = _windows(available, ideal, mid)
        best = _nearest_total(_prefixes(units, windows)[-1][0], target, unit)
        if abs(best * unit - target) <= slack:
            hi = mid
        else:
            lo = mid + 1
    return _closest(units, _windows(available, ideal, lo), target, unit)


def _closest(units: Sequence[int], windows: list[tuple[int, int]], target: int, unit: int) -> list[int]:
    prefixes = _prefixes(units, windows)
    return _counts_for(prefixes, len(units), _nearest_total(prefixes[-1][0], target, unit))


def _windows(available: Sequence[int], ideal: Fraction, level: int) -> list[tuple[int, int]]:
    """Per kind, the +1 counts c with |c - ideal·n| < level (level 1: floor or ceil)."""
    return [(max(0, floor(ideal * n) - level + 1), min(n, ceil(ideal * n) + level - 1)) for n in available]


def _prefixes(units: Sequence[int], windows: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Reachable totals after each step (bit s set: a total of s units is reachable), with
    the step's (kind, count, unit size). Each kind first shifts by its lowest count (a
    forced step), then adds up to hi - lo more in power-of-two chunks: a bounded
    subset-sum, exact and fast."""
    steps = [(1, -1, 0, 0)]
    for kind, ((lo, hi), size) in enumerate(zip(windows, units)):
        steps.append((steps[-1][0] << (lo * size), kind, -lo, size))  # negative count: forced
        extra, chunk = hi - lo, 1
        while extra > 0:
            take = min(chunk, extra)
            steps.append((steps[-1][0] | (steps[-1][0] << (take * size)), kind, take, size))
            extra -= take
            chunk *= 2
    return steps


def _counts_for(prefixes: list[tuple[int, int, int, int]], kinds: int, total: int) -> list[int]:
    """Walk the steps back from `total`: a chunk is taken only when the total is not
    reachable without it."""
    counts = [0] * kinds
    for i in range(len(prefixes) - 1, 0, -1):
        _, kind, count, size = prefixes[i]
        if count < 0 or not (prefixes[i - 1][0] >> total) & 1:
            counts[kind] += abs(count)
            total -= abs(count) * size
    assert total == 0, "backtracking must end at the empty sum"
    return counts


def _nearest_total(bits: int, target: int, unit: int) -> int:
    """The reachable total (in units) nearest to `target` (in parameters); ties: the smaller."""
    low = target // unit
    below = (bits & ((1 << (low + 1)) - 1)).bit_length() - 1  # bit 0 is always set
    high = -(-target // unit)
    above_bits = bits >> high
    above = high + (above_bits & -above_bits).bit_length() - 1 if above_bits else None
    if above is None or target - below * unit <= above * unit - target:
        return below
    return above


def _place(groups: list[list[int]], counts: list[int], positions: Sequence[tuple[int, int]]) -> list[int]:
    """Which modules get the +1s: `counts[g]` of group g's modules. Every +1 has an ideal
    depth, (k + 0.5) / counts[g] for the k-th of its kind; all of them, in order of that
    depth, fill the layers bottom to top, each layer taking its share (per-layer totals
    differ by at most one) and no kind twice where it has one module. A +1 its kind cannot
    take on a layer waits for the next one; one left at the top takes the first free module."""
    layers = sorted({layer for layer, _ in positions})
    free: list[dict[int, list[int]]] = []
    for members in groups:
        by_layer: dict[int, list[int]] = defaultdict(list)
        for index in sorted(members, key=lambda i: positions[i]):
            by_layer[positions[index][0]].append(index)
        free.append(by_layer)
    queue = [g for _, g in sorted(((k + 0.5) / c, g) for g, c in enumerate(counts) for k in range(c))]
    total, chosen = len(queue), []
    for n, layer in enumerate(layers):
        quota = (n + 1) * total // len(layers) - n * total // len(layers)
        waiting = []
        for position, g in enumerate(queue):
            if quota == 0:
                waiting.extend(queue[position:])
                break
            if free[g].get(layer):
                chosen.append(free[g][layer].pop(0))
                quota -= 1
            else:
                waiting.append(g)
        queue = waiting
    for g in queue:
        layer = next(layer for layer in layers if free[g].get(layer))
        chosen.append(free[g][layer].pop(0))
    return chosen
