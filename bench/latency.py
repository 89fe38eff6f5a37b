"""Pure helpers of the latency benchmarks: percentiles, joins of raw samples to orders, and the
schedule of a paced feed. No I/O; unit-tested in ``tests/unit/test_bench_latency.py``.

Times are UTC ns ints (``ts_*``) or float ms (``*_ms``), as in the product.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NS_PER_MS = 1_000_000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0–100) of an ascending sequence: the smallest value with
    at least ``q`` % of the values at or below it. NaN for no values.

    With n values p99.9 is the maximum until n reaches 1,000: say so beside it.
    """
    if not sorted_values:
        return float("nan")
    # rank = ceil(q % of n); the epsilon keeps 99.9 % of 2,000 (1998 in exact arithmetic) from
    # rounding up to 1999 in binary floating point.
    rank = math.ceil(q * len(sorted_values) / 100 - 1e-9)
    k = max(0, min(len(sorted_values) - 1, rank - 1))
    return float(sorted_values[k])


@dataclass(frozen=True)
class Summary:
    """Order statistics of one set of latencies, in ms."""

    n: int
    p50: float
    p99: float
    p999: float
    max: float
    mean: float

    @property
    def p999_is_max(self) -> bool:
        """Nearest rank: below 1,000 values p99.9 is the largest one."""
        return self.n < 1000


def summarize(values_ms: Iterable[float]) -> Summary:
    v = sorted(values_ms)
    if not v:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan)
    return Summary(
        len(v), percentile(v, 50), percentile(v, 99), percentile(v, 99.9), v[-1], sum(v) / len(v)
    )


@dataclass(frozen=True)
class Sample:
    """One raw observation of a ``tick_to_*`` stage: when it was taken and its value."""

    observed_at_ns: int
    ms: float

    @property
    def origin_ns(self) -> int:
        """Start of the measured span (the tick's ``ts_origin``), to within a microsecond."""
        return self.observed_at_ns - round(self.ms * NS_PER_MS)


def join_by_origin(
    samples: Sequence[Sample], origins_ns: Sequence[int], tolerance_ns: int = 50_000
) -> list[int | None]:
    """For each sample, the index of the origin it measured, or None.

    A sample measures the origin within ``tolerance_ns`` of its ``origin_ns``; several origins
    may be equal (two exits decided on one tick), so each origin is used once, in order: samples
    are taken in observation order and matched to the earliest unused origin that fits.
    """
    order = sorted(range(len(origins_ns)), key=lambda i: origins_ns[i])
    keys = [origins_ns[i] for i in order]
    used = [False] * len(order)
    out: list[int | None] = []
    for s in sorted(samples, key=lambda s: s.observed_at_ns):
        o = s.origin_ns
        j = bisect.bisect_left(keys, o - tolerance_ns)
        hit = None
        while j < len(keys) and keys[j] <= o + tolerance_ns:
            if not used[j]:
                hit = j
                break
            j += 1
        if hit is None:
            out.append(None)
        else:
            used[hit] = True
            out.append(order[hit])
    return out


def per_second_counts(ts_ns: Iterable[int], start_ns: int, end_ns: int) -> list[int]:
    """How many of ``ts_ns`` fall in each whole second of ``[start_ns, end_ns)``; a last,
    partial second is left out."""
    seconds = max(0, (end_ns - start_ns) // 1_000_000_000)
    counts = [0] * seconds
    for t in ts_ns:
        i = (t - start_ns) // 1_000_000_000
        if 0 <= i < seconds:
            counts[i] += 1
    return counts


def paced_positions(row_of_tick: Sequence[int | None]) -> list[int | None]:
    """The pace position k of each tick the feed received, in arrival order, or None for a
    tick the pace did not release (a snapshot sent on subscribe).

    ``row_of_tick`` is each received tick's row in the session file (None when its key is not
    unique there). The pace releases rows in file order and stops right after each paced row,
    so a tick whose row is not above the highest row already seen is a re-send of an
    instrument's latest state, not a paced tick; every other tick is the next paced one.
    """
    out: list[int | None] = []
    k, high = 0, -1
    for row in row_of_tick:
        if row is not None and row <= high:
            out.append(None)
            continue
        if row is not None:
            high = row
        out.append(k)
        k += 1
    return out
