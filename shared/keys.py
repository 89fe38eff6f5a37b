"""Every Redis key name, in one place.

Keys carry a namespace wrapped in a Redis Cluster hash tag, ``scalper:{<ns>}:...``, so one
deployment's keys live on one shard and several deployments share a Redis without touching
each other (paper vs live, a replay beside production).
"""

from __future__ import annotations

import msgspec

LOGICAL_STREAMS = (
    "ticks",
    "signals",
    "entries.decisions",
    "orders.requests",
    "orders.events",
    "positions",
    "feed.control",
    "deadletter",
)


class Keys(msgspec.Struct, frozen=True):
    namespace: str = "paper"

    @property
    def prefix(self) -> str:
        return f"scalper:{{{self.namespace}}}"

    def stream(self, logical: str) -> str:
        if logical not in LOGICAL_STREAMS:
            raise KeyError(f"unknown stream {logical!r}")
        return f"{self.prefix}:{logical}"

    def logical(self, key: str) -> str:
        """The logical name of a real stream key of this namespace."""
        return key.removeprefix(self.prefix + ":")

    def latest_tick(self, segment: str, security_id: int) -> str:
        return f"{self.prefix}:tick:{segment}:{security_id}"

    def pnl(self, position_id: str) -> str:
        return f"{self.prefix}:pnl:{position_id}"

    def heartbeat(self, service: str, instance: str) -> str:
        return f"{self.prefix}:heartbeat:{service}:{instance}"

    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}:heartbeat:*"

    def checkpoint(self, service: str) -> str:
        return f"{self.prefix}:checkpoint:{service}"

    def frontier(self, service: str) -> str:
        """Exclusive tick-id frontier: all outputs caused by ticks before it are written."""
        return f"{self.prefix}:frontier:{service}"

    def signals_partitions(self) -> str:
        """Set of the signals consumer groups (one per partition of the indices)."""
        return f"{self.prefix}:signals:partitions"

    def recorder_status(self) -> str:
        return f"{self.prefix}:recorder:status"

    def metrics(self, service: str) -> str:
        """Per-service latency histograms (JSON; format in shared/ops/metrics.py)."""
        return f"{self.prefix}:metrics:{service}"

    def dedupe(self, logical: str) -> str:
        """Set of msg_ids already published to a stream (idempotent publishing)."""
        return f"{self.prefix}:dedupe:{logical}"

    def trading_state(self) -> str:
        return f"{self.prefix}:trading_state"

    def executor_state(self) -> str:
        return f"{self.prefix}:executor:state"

    def replay_status(self) -> str:
        return f"{self.prefix}:replay:status"

    def all_pattern(self) -> str:
        return f"{self.prefix}:*"
