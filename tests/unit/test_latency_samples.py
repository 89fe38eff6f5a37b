"""The raw samples kept beside the per-order latency histograms (shared/ops/metrics.py)."""

from __future__ import annotations

import orjson

from shared.ops import metrics


def test_per_order_stages_keep_their_newest_raw_samples_and_others_none():
    h = metrics.LatencyHistograms(buckets_ms=[1, 5], recent_samples=3)
    for i, ms in enumerate((0.5, 2.0, 7.0, 3.25)):
        h.observe("tick_to_order_entry", ms, observed_at_ns=1_000 + i)
    h.observe("queue", 1.0, observed_at_ns=5_000)
    raw = h.to_json("executor", ts_ns=9_999)
    assert metrics.parse_samples(raw) == {
        "tick_to_order_entry": [(1_001, 2.0), (1_002, 7.0), (1_003, 3.25)]  # oldest dropped
    }
    doc = orjson.loads(raw)
    # the histogram still counts every observation, and readers of the histograms are unaffected
    assert doc["histograms"]["tick_to_order_entry"]["counts"] == [1, 2, 1]
    sh, bad = metrics.parse_histograms(raw)
    assert bad == 0 and sh is not None and set(sh.histograms) == {"tick_to_order_entry", "queue"}


def test_without_per_order_stages_the_document_is_the_histograms_only():
    h = metrics.LatencyHistograms(buckets_ms=[1])
    h.observe("batch", 0.2)
    doc = orjson.loads(h.to_json("signals", ts_ns=1))
    assert "recent" not in doc and metrics.parse_samples(h.to_json("signals", ts_ns=1)) == {}


def test_a_sample_stamped_now_recovers_its_origin_to_within_a_microsecond(monkeypatch):
    monkeypatch.setattr(metrics.time, "time_ns", lambda: 1_796_097_780_412_345_678)
    h = metrics.LatencyHistograms()
    origin = 1_796_097_780_400_000_000
    h.observe("tick_to_exit_intent", (1_796_097_780_412_345_678 - origin) / 1e6)
    ((at, ms),) = metrics.parse_samples(h.to_json("exits", ts_ns=1))["tick_to_exit_intent"]
    assert abs(at - round(ms * 1e6) - origin) <= 1_000


def test_unreadable_values_have_no_samples():
    assert metrics.parse_samples(b"not json") == {}
    assert metrics.parse_samples(b'{"service": "x", "recent": {"a": [[1, "x"]]}}') == {}
