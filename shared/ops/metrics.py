"""Prometheus text exposition of a deployment, and the per-service latency histogram format.

Exposed metrics (text format 0.0.4; label ``namespace`` on none of them — one API per namespace):

======================================================  =========  ==============================
``scalper_up``                                          gauge      1 while the API can read Redis
``scalper_stream_length{stream}``                       gauge      XLEN
``scalper_stream_entries_added_total{stream}``          counter    entries ever added (XINFO)
``scalper_tick_rate_per_second``                        gauge      ticks added per wall second
                                                                   since the previous scrape
``scalper_consumer_group_lag{stream,group}``            gauge      entries not yet delivered
``scalper_consumer_group_pending{stream,group}``        gauge      delivered, not acknowledged
``scalper_service_heartbeat_age_seconds{service,instance}`` gauge  now minus the heartbeat's ts
``scalper_service_handled_total{service,instance}``     counter    messages handled (per process)
``scalper_tick_age_seconds``                            gauge      now minus the newest tick's
                                                                   ``ts_event``
``scalper_orders{kind,status}``                         gauge      orders in the ledger
``scalper_order_rejections``                            gauge      orders with status rejected
``scalper_open_positions``                              gauge      active trackers
``scalper_open_pnl_rupees``                             gauge      sum of the live PnL hashes
``scalper_realised_pnl_rupees{basis}``                  gauge      today (IST), gross and net
``scalper_trades_today``                                gauge      trades exited today (IST)
``scalper_stage_latency_seconds{service,stage}``        histogram  from the services' keys below
======================================================  =========  ==============================

Per-service latency histograms (written by the services, read here)
-------------------------------------------------------------------

Key ``scalper:{<ns>}:metrics:<service>`` (a service running several instances writes
``scalper:{<ns>}:metrics:<service>:<instance>`` each), a JSON string::

    {
      "service": "exits",
      "instance": "host-4121",                  # optional
      "ts": 1796097780412000000,                # wall UTC ns of this write
      "histograms": {
        "tick_to_exit_intent": {                # stage name: [a-z0-9_]+
          "buckets_ms": [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000],  # ascending upper bounds
          "counts": [0, 4, 17, 9, 2, 0, 0, 0, 0, 0, 1],              # per bucket, NOT cumulative;
                                                                     # one more than buckets_ms:
                                                                     # the last is above the top
          "sum_ms": 812.5,
          "count": 33                           # == sum(counts)
        }
      }
    }

Per-order stages (names starting ``tick_to_``, a few per second at most) also keep their most
recent raw observations, because the buckets are too coarse for exact percentiles below a few
ms. They go under an extra top-level key that readers of the histograms ignore::

      "recent": {                               # stage -> [[observed_at UTC ns, ms], ...]
        "tick_to_exit_intent": [[1796097780402000000, 3.25], ...]   # oldest first; at most
      }                                                             # RECENT_SAMPLES per stage

``observed_at - ms`` recovers the start of the measured span (e.g. the tick's ``ts_origin``) to
within a microsecond, which is how a benchmark joins a sample to its order.

Counts and sums are totals since the process started (a restart resets them, as for any
Prometheus counter). A service keeps a :class:`LatencyHistograms`, calls ``observe(stage, ms)``
and writes ``to_json(...)`` with ``SET key value EX <heartbeat_ttl_s>`` beside its heartbeat, so
a dead service's histograms expire with it. An observation ``v`` falls in the first bucket with
``v <= bound``. Histograms that do not follow this format are skipped (and counted in
``scalper_metrics_invalid_histograms``).
"""

from __future__ import annotations

import bisect
import math
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec

from shared.keys import Keys

DEFAULT_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
STAGE_RE = re.compile(r"^[a-z0-9_]{1,64}$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLED_STAGE_PREFIX = "tick_to_"
"""Stages whose recent raw observations are kept (see the module doc)."""
RECENT_SAMPLES = 1024
"""Raw observations kept per sampled stage (the newest)."""


def metrics_key(keys: Keys, service: str, instance: str | None = None) -> str:
    """``scalper:{ns}:metrics:<service>[:<instance>]`` (to move into shared.keys when wired)."""
    return f"{keys.prefix}:metrics:{service}" + (f":{instance}" if instance else "")


def metrics_pattern(keys: Keys) -> str:
    return f"{keys.prefix}:metrics:*"


# --------------------------------------------------------------------------- histogram format


class Histogram(msgspec.Struct, kw_only=True):
    buckets_ms: list[float]
    counts: list[int]
    sum_ms: float = 0.0
    count: int = 0

    def check(self) -> None:
        """Raise ValueError unless this is a well-formed histogram (see the module doc)."""
        b = self.buckets_ms
        if not b or any(not math.isfinite(x) for x in b) or any(x >= y for x, y in zip(b, b[1:], strict=False)):
            raise ValueError("buckets_ms must be finite and strictly ascending")
        if len(self.counts) != len(b) + 1:
            raise ValueError("counts must have len(buckets_ms) + 1 entries")
        if any(c < 0 for c in self.counts) or sum(self.counts) != self.count:
            raise ValueError("counts must be non-negative and sum to count")
        if not math.isfinite(self.sum_ms):
            raise ValueError("sum_ms must be finite")


class ServiceHistograms(msgspec.Struct, kw_only=True):
    service: str
    ts: int = 0
    instance: str = ""
    histograms: dict[str, Histogram] = msgspec.field(default_factory=dict)


class ServiceSamples(ServiceHistograms, kw_only=True):
    """What a service writes when it has raw samples: the histograms plus ``recent``."""

    recent: dict[str, list[tuple[int, float]]] = msgspec.field(default_factory=dict)


_decoder = msgspec.json.Decoder(ServiceHistograms)


_samples_decoder = msgspec.json.Decoder(ServiceSamples)


def parse_samples(raw: bytes | str) -> dict[str, list[tuple[int, float]]]:
    """The ``recent`` raw samples of one metrics key's value (empty when it has none or is
    unreadable): stage -> [(observed_at UTC ns, ms), ...], oldest first."""
    try:
        return _samples_decoder.decode(raw).recent
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {}


def parse_histograms(raw: bytes | str) -> tuple[ServiceHistograms | None, int]:
    """Decode one metrics key's value: (its valid histograms or None if unreadable, how many
    histograms were dropped as invalid)."""
    try:
        sh = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, 1
    good: dict[str, Histogram] = {}
    bad = 0
    for stage, h in sh.histograms.items():
        try:
            if not STAGE_RE.match(stage):
                raise ValueError("bad stage name")
            h.check()
        except ValueError:
            bad += 1
            continue
        good[stage] = h
    sh.histograms = good
    return sh, bad


class LatencyHistograms:
    """What a service keeps: per-stage histograms in ms, serialised in the format above, and the
    newest ``recent_samples`` raw observations of the stages named ``sampled_prefix``*."""

    def __init__(self, buckets_ms: Sequence[float] = DEFAULT_BUCKETS_MS, *,
                 sampled_prefix: str = SAMPLED_STAGE_PREFIX,
                 recent_samples: int = RECENT_SAMPLES) -> None:
        self.buckets_ms = [float(b) for b in buckets_ms]
        self._h: dict[str, Histogram] = {}
        self._sampled_prefix = sampled_prefix
        self._recent_samples = recent_samples
        self._recent: dict[str, deque[tuple[int, float]]] = {}

    def observe(self, stage: str, ms: float, observed_at_ns: int | None = None) -> None:
        """Count one observation of ``ms``; ``observed_at_ns`` (UTC ns, default now) stamps the
        raw sample of a sampled stage."""
        h = self._h.get(stage)
        if h is None:  # the stage name is checked once, when its histogram is created
            if not STAGE_RE.match(stage):
                raise ValueError(f"stage name {stage!r}: expected [a-z0-9_]+")
            h = self._h[stage] = Histogram(buckets_ms=list(self.buckets_ms),
                                           counts=[0] * (len(self.buckets_ms) + 1))
            if self._recent_samples > 0 and stage.startswith(self._sampled_prefix):
                self._recent[stage] = deque(maxlen=self._recent_samples)
        h.counts[bisect.bisect_left(self.buckets_ms, ms)] += 1  # first bucket with ms <= bound
        h.count += 1
        h.sum_ms += ms
        recent = self._recent.get(stage)
        if recent is not None:
            recent.append((time.time_ns() if observed_at_ns is None else observed_at_ns, ms))

    def to_json(self, service: str, ts_ns: int, instance: str = "") -> bytes:
        if not self._recent:
            return msgspec.json.encode(
                ServiceHistograms(service=service, ts=ts_ns, instance=instance, histograms=self._h))
        return msgspec.json.encode(ServiceSamples(
            service=service, ts=ts_ns, instance=instance, histograms=self._h,
            recent={stage: list(d) for stage, d in self._recent.items()}))


# --------------------------------------------------------------------------- exposition


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(v: float | int) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Exposition:
    """Metric families in the order first added, each with HELP, TYPE and its samples."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_: str, value: float | int | None,
            labels: dict[str, str] | None = None, suffix: str = "") -> None:
        """One sample of family ``name`` (``suffix`` for histogram parts); None values skipped."""
        fam = self._families.setdefault(name, (kind, help_, []))
        if value is None:
            return
        lab = ""
        if labels:
            lab = "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"
        fam[2].append(f"{name}{suffix}{lab} {_value(value)}")

    def text(self) -> str:
        out = []
        for name, (kind, help_, samples) in self._families.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _rupees(paise: int | None) -> float | None:
    return None if paise is None else paise / 100


def render(snap: dict[str, Any], *, tick_rate_per_s: float | None = None,
           tick_age_s: float | None = None, orders: dict[tuple[str, str], int] | None = None,
           histograms: Sequence[ServiceHistograms] = (), invalid_histograms: int = 0) -> str:
    """The exposition of a status snapshot (:func:`shared.ops.status.collect`) and extras."""
    e = Exposition()
    e.add("scalper_up", "gauge", "1 when the API could read Redis", 1)
    for s, st in snap["streams"].items():
        e.add("scalper_stream_length", "gauge", "Entries in the stream (XLEN)", st["length"],
              {"stream": s})
    for s, st in snap["streams"].items():
        e.add("scalper_stream_entries_added_total", "counter", "Entries ever added to the stream",
              st["entries_added"] or 0, {"stream": s})
    e.add("scalper_tick_rate_per_second", "gauge",
          "Ticks added per wall second since the previous scrape", tick_rate_per_s)
    e.add("scalper_tick_age_seconds", "gauge", "Wall now minus the newest tick's ts_event",
          tick_age_s)
    for s, st in snap["streams"].items():
        for g, gs in st["groups"].items():
            e.add("scalper_consumer_group_lag", "gauge", "Entries not yet delivered to the group",
                  gs["lag"], {"stream": s, "group": g})
    for s, st in snap["streams"].items():
        for g, gs in st["groups"].items():
            e.add("scalper_consumer_group_pending", "gauge", "Entries delivered but not acked",
                  gs["pending"], {"stream": s, "group": g})
    for name, svc in snap["services"].items():
        for inst in svc["instances"]:
            e.add("scalper_service_heartbeat_age_seconds", "gauge",
                  "Wall now minus the service heartbeat's ts", inst["age_s"],
                  {"service": name, "instance": inst["instance"]})
    for name, svc in snap["services"].items():
        for inst in svc["instances"]:
            e.add("scalper_service_handled_total", "counter",
                  "Messages handled by the process (resets on restart)", inst["handled"],
                  {"service": name, "instance": inst["instance"]})
    e.add("scalper_orders", "gauge", "Orders in the ledger by kind and status", None)
    for (kind, status), n in sorted((orders or {}).items()):
        e.add("scalper_orders", "gauge", "", n, {"kind": kind, "status": status})
    e.add("scalper_order_rejections", "gauge", "Orders in the ledger with status rejected",
          None if orders is None else sum(n for (_, st), n in orders.items() if st == "rejected"))
    positions = snap["positions"]
    e.add("scalper_open_positions", "gauge", "Active position trackers",
          None if positions is None else len(positions))
    e.add("scalper_open_pnl_rupees", "gauge", "Sum of the open positions' live PnL",
          _rupees(snap["open_pnl_paise"]))
    day = snap["today"]
    e.add("scalper_realised_pnl_rupees", "gauge", "Realised PnL of today (IST), gross and net",
          None if day is None else _rupees(day["gross_pnl_paise"]), {"basis": "gross"})
    e.add("scalper_realised_pnl_rupees", "gauge", "",
          None if day is None else _rupees(day["net_pnl_paise"]), {"basis": "net"})
    e.add("scalper_trades_today", "gauge", "Trades exited today (IST)",
          None if day is None else day["trades"])
    name = "scalper_stage_latency_seconds"
    e.add(name, "histogram", "Stage latency reported by the services", None)
    for sh in histograms:
        for stage, h in sorted(sh.histograms.items()):
            base = {"service": sh.service, **({"instance": sh.instance} if sh.instance else {}),
                    "stage": stage}
            cum = 0
            for bound, c in zip(h.buckets_ms, h.counts, strict=False):
                cum += c
                e.add(name, "histogram", "", cum, {**base, "le": _value(bound / 1000)}, "_bucket")
            e.add(name, "histogram", "", h.count, {**base, "le": "+Inf"}, "_bucket")
            e.add(name, "histogram", "", h.sum_ms / 1000, base, "_sum")
            e.add(name, "histogram", "", h.count, base, "_count")
    e.add("scalper_metrics_invalid_histograms", "gauge",
          "Histograms in metrics keys that did not follow the documented format",
          invalid_histograms)
    return e.text()


def read_histograms(r: Any, keys: Keys) -> tuple[list[ServiceHistograms], int]:
    """Every metrics key of the namespace (sync Redis client): (valid histograms, invalid count)."""
    out, invalid = [], 0
    for k in sorted(r.scan_iter(match=metrics_pattern(keys), count=500)):
        raw = r.get(k)
        if raw is None:
            continue
        sh, bad = parse_histograms(raw)
        invalid += bad
        if sh is not None:
            out.append(sh)
    return out, invalid


def order_counts(ledger: Any) -> dict[tuple[str, str], int]:
    """(kind, status) -> number of orders in the ledger."""
    from shared.store.db import translate

    with translate("count orders"):
        rows = ledger.conn.execute(
            "SELECT kind, status, count(*) FROM orders GROUP BY kind, status").fetchall()
    return {(kind, status): int(n) for kind, status, n in rows}


class TickRate:
    """Ticks per wall second between successive scrapes, from the stream's entries-added count."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def update(self, now_ns: int, entries_added: int | None) -> float | None:
        if entries_added is None:
            return None
        prev, self._last = self._last, (now_ns, entries_added)
        if prev is None or now_ns <= prev[0] or entries_added < prev[1]:
            return None
        return (entries_added - prev[1]) / ((now_ns - prev[0]) / 1e9)
