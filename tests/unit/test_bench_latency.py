"""The latency benchmark's pure helpers (bench/latency.py): percentiles, joins, pacing schedule."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_latency", Path(__file__).resolve().parents[2] / "bench" / "latency.py"
)
assert _spec is not None and _spec.loader is not None
lat = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lat  # dataclasses look their module up
_spec.loader.exec_module(lat)


def test_nearest_rank_percentile_picks_the_smallest_value_covering_the_share():
    v = list(range(1, 101))  # 1..100
    assert lat.percentile(v, 50) == 50
    assert lat.percentile(v, 99) == 99
    assert lat.percentile(v, 99.9) == 100
    assert lat.percentile(v, 100) == 100
    assert lat.percentile(v, 0) == 1
    assert lat.percentile([7.5], 99.9) == 7.5
    assert math.isnan(lat.percentile([], 50))


def test_p999_needs_a_thousand_values_before_it_is_not_the_maximum():
    small = lat.summarize(float(x) for x in range(999))
    assert small.p999 == small.max == 998 and small.p999_is_max
    big = lat.summarize(float(x) for x in range(2000))  # 0..1999
    assert big.p999 == 1997 and big.max == 1999 and not big.p999_is_max
    assert (big.n, big.p50, big.p99) == (2000, 999, 1979)


def test_summary_of_unsorted_values_sorts_them_and_of_none_is_nan():
    s = lat.summarize([5.0, 1.0, 3.0])
    assert (s.n, s.p50, s.max, s.mean) == (3, 3.0, 5.0, 3.0)
    assert math.isnan(lat.summarize([]).p50)


def test_sample_origin_is_observation_time_minus_the_value():
    s = lat.Sample(observed_at_ns=1_796_097_780_412_345_678, ms=12.345678)
    assert s.origin_ns == 1_796_097_780_400_000_000


def test_samples_join_their_origins_within_tolerance_and_equal_origins_once_each():
    origins = [1_000_000_000, 2_000_000_000, 2_000_000_000, 5_000_000_000]
    samples = [
        lat.Sample(2_000_000_000 + 3_000_000, 3.0),  # origin 2.000 s
        lat.Sample(1_000_000_000 + 7_000_000 + 20_000, 7.0),  # 20 us off origin 1 s
        lat.Sample(2_000_000_000 + 9_000_000, 9.0),  # the other origin at 2 s
        lat.Sample(2_000_000_000 + 11_000_000, 11.0),  # a third at 2 s: none left
        lat.Sample(9_000_000_000, 1.0),  # nothing near
    ]
    hits = lat.join_by_origin(samples, origins)
    # results follow the samples in observation order
    by_time = sorted(samples, key=lambda s: s.observed_at_ns)
    got = {s.ms: h for s, h in zip(by_time, hits, strict=True)}
    assert got[7.0] == 0
    assert {got[3.0], got[9.0]} == {1, 2}
    assert got[11.0] is None and got[1.0] is None


def test_per_second_counts_leave_out_the_last_partial_second():
    s = 10_000_000_000
    ts = [s, s + 500_000_000, s + 1_200_000_000, s + 2_999_999_999, s + 3_100_000_000, s - 1]
    assert lat.per_second_counts(ts, s, s + 3_500_000_000) == [2, 1, 1]


def test_paced_positions_skip_resent_rows_and_count_unknown_ones():
    # rows in arrival order: 3 and 5 are paced; 2 is a snapshot re-sent on subscribe;
    # None (a key not unique in the file) counts as paced; 5 again is a re-send.
    assert lat.paced_positions([3, 5, 2, None, 9, 5, 11]) == [0, 1, None, 2, 3, None, 4]


@pytest.mark.parametrize("rows", [[], [None, None]])
def test_paced_positions_of_unknown_rows_count_every_tick(rows):
    assert lat.paced_positions(rows) == list(range(len(rows)))
