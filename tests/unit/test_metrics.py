"""Prometheus exposition and the per-service histogram format (pure, no servers)."""

from __future__ import annotations

import re

import orjson

from shared.keys import Keys
from shared.ops import metrics

SAMPLE_RE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$"
)


def _snapshot(**over):
    snap = {
        "streams": {
            "ticks": {"length": 4, "entries_added": 10, "groups": {"signals": {"lag": 3, "pending": 1}}},
            "signals": {"length": 0, "entries_added": None, "groups": {"entries": {"lag": None, "pending": 0}}},
        },
        "services": {
            "feed": {"instances": [{"instance": 'h"1', "age_s": 0.5, "handled": 7, "info": {}}]},
            "exits": {"instances": []},
        },
        "positions": [{"pnl_paise": 1234}],
        "open_pnl_paise": 1234,
        "today": {"trades": 2, "gross_pnl_paise": 3000, "net_pnl_paise": 1900},
    }
    snap.update(over)
    return snap


def _samples(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert SAMPLE_RE.match(line), f"not an exposition sample: {line!r}"
        name, value = line.rsplit(" ", 1)
        out[name] = value
    return out


def test_latency_histograms_round_trip_and_expose_cumulative_buckets_in_seconds():
    h = metrics.LatencyHistograms(buckets_ms=[1, 5, 10])
    for ms in (0.5, 1, 3, 7, 50):
        h.observe("tick_to_intent", ms)
    raw = h.to_json("exits", ts_ns=123, instance="")
    doc = orjson.loads(raw)
    assert doc["histograms"]["tick_to_intent"] == {
        "buckets_ms": [1.0, 5.0, 10.0], "counts": [2, 1, 1, 1], "sum_ms": 61.5, "count": 5}
    sh, bad = metrics.parse_histograms(raw)
    assert bad == 0 and sh is not None
    s = _samples(metrics.render(_snapshot(), histograms=[sh]))
    base = 'scalper_stage_latency_seconds_bucket{service="exits",stage="tick_to_intent",le='
    assert s[base + '"0.001"}'] == "2"
    assert s[base + '"0.005"}'] == "3"
    assert s[base + '"0.01"}'] == "4"
    assert s[base + '"+Inf"}'] == "5"
    assert s['scalper_stage_latency_seconds_sum{service="exits",stage="tick_to_intent"}'] == "0.0615"
    assert s['scalper_stage_latency_seconds_count{service="exits",stage="tick_to_intent"}'] == "5"


def test_histograms_not_following_the_format_are_dropped_and_counted():
    good = {"buckets_ms": [1, 2], "counts": [1, 0, 0], "sum_ms": 0.5, "count": 1}
    doc = {"service": "x", "histograms": {
        "ok": good,
        "descending": {**good, "buckets_ms": [2, 1]},
        "short_counts": {**good, "counts": [1, 0]},
        "bad_count": {**good, "count": 9},
        "Bad-Name": good,
    }}
    sh, bad = metrics.parse_histograms(orjson.dumps(doc))
    assert sh is not None and list(sh.histograms) == ["ok"] and bad == 4
    assert metrics.parse_histograms(b"{not json") == (None, 1)
    text = metrics.render(_snapshot(), histograms=[sh], invalid_histograms=bad)
    assert _samples(text)["scalper_metrics_invalid_histograms"] == "4"


def test_render_exposes_streams_groups_heartbeats_orders_pnl_with_escaped_labels():
    orders = {("entry", "traded"): 3, ("entry", "rejected"): 1, ("exit", "rejected"): 1}
    text = metrics.render(_snapshot(), tick_rate_per_s=12.5, tick_age_s=1.25, orders=orders)
    s = _samples(text)
    assert s['scalper_stream_length{stream="ticks"}'] == "4"
    assert s['scalper_stream_entries_added_total{stream="signals"}'] == "0"
    assert s['scalper_consumer_group_lag{stream="ticks",group="signals"}'] == "3"
    assert 'scalper_consumer_group_lag{stream="signals",group="entries"}' not in s  # lag unknown
    assert s['scalper_consumer_group_pending{stream="signals",group="entries"}'] == "0"
    assert s['scalper_service_heartbeat_age_seconds{service="feed",instance="h\\"1"}'] == "0.5"
    assert s['scalper_service_handled_total{service="feed",instance="h\\"1"}'] == "7"
    assert s['scalper_orders{kind="entry",status="traded"}'] == "3"
    assert s["scalper_order_rejections"] == "2"
    assert s["scalper_open_positions"] == "1"
    assert s["scalper_open_pnl_rupees"] == "12.34"
    assert s['scalper_realised_pnl_rupees{basis="gross"}'] == "30.0"
    assert s['scalper_realised_pnl_rupees{basis="net"}'] == "19.0"
    assert s["scalper_trades_today"] == "2"
    assert s["scalper_tick_rate_per_second"] == "12.5"
    assert s["scalper_tick_age_seconds"] == "1.25"
    # Each family's HELP and TYPE appear once, before its samples.
    assert text.count("# TYPE scalper_realised_pnl_rupees gauge") == 1
    assert text.count("# TYPE scalper_stage_latency_seconds histogram") == 1


def test_render_without_the_ledger_leaves_ledger_metrics_out():
    s = _samples(metrics.render(_snapshot(positions=None, open_pnl_paise=None, today=None)))
    assert "scalper_open_positions" not in s and "scalper_trades_today" not in s
    assert "scalper_order_rejections" not in s and s["scalper_up"] == "1"


def test_tick_rate_is_the_entries_added_delta_per_wall_second():
    rate = metrics.TickRate()
    assert rate.update(1_000_000_000, 100) is None  # first scrape: no rate yet
    assert rate.update(3_000_000_000, 150) == 25.0
    assert rate.update(4_000_000_000, 10) is None  # stream recreated: counter went back
    assert rate.update(5_000_000_000, None) is None


def test_metrics_key_names_are_namespaced():
    keys = Keys("paper")
    assert metrics.metrics_key(keys, "exits") == "scalper:{paper}:metrics:exits"
    assert metrics.metrics_key(keys, "executor", "h-1") == "scalper:{paper}:metrics:executor:h-1"
