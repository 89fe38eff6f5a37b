"""Switchable faults: set at start (``--faults SPEC``) or live (``POST /__sim/faults``).

Settings (sticky values and counters; a counter is consumed one unit per affected event):

====================== ======================================================================
``http_429``           the next N ``/v2`` requests answer HTTP 429 with a DH-904 body
``http_5xx``           the next N ``/v2`` requests answer HTTP 500 with a DH-908 body
``delay_ms``           every ``/v2`` request waits this long *before* it is handled (sticky;
                       an order sent under it is recorded only after the delay)
``http_path_prefix``   which paths the three above hit (default ``/v2/``, e.g. ``/v2/orders``)
``http_method``        and which method (default ``""``: any; e.g. ``POST``, so that a GET of
                       the order book does not use up a fault meant for a placement)
``reject_orders``      the next N placed orders go TRANSIT → REJECTED with ``reject_reason``
``timeout_after_accept`` the next N ``POST /orders`` are accepted and recorded (they go on to
                       fill), but the answer is lost: ``timeout_mode`` ``drop`` closes the
                       connection without a response, ``delay`` answers after
                       ``timeout_delay_ms``
``partial_fills``      the next N placed orders of more than one lot fill in two parts:
                       ``partial_fill_lots`` lots (default 1) at the first matching tick
                       (PART_TRADED), the rest at the next matching tick (TRADED) — or, with
                       ``partial_remainder`` ``cancel`` / ``expire``, the rest is cancelled /
                       expires there instead (CANCELLED / EXPIRED with the first part traded)
``feed_duplicate``     the next N market-data packets on the feed are each sent twice
``feed_reorder``       the next N market-data packets are each held back and sent after the
                       following packet of the same connection
``feed_handshake_429`` the next N feed handshakes are refused with HTTP 429
``feed_disconnect_every_s`` / ``feed_disconnect_reason`` periodically send Disconnect(reason)
                       to every feed socket and close it
``drop_feed_every_s`` / ``drop_order_ws_every_s`` periodically abort those sockets (no close
                       frame, like a network drop)
====================== ======================================================================

Actions (control endpoint only, immediate): ``feed_disconnect`` (a reason code, e.g. 805 or
807), ``drop_feed`` and ``drop_order_ws`` (true).

CLI spec: comma-separated ``key=value`` pairs of settings, e.g.
``http_429=3,delay_ms=200,reject_orders=1,reject_reason=RMS:Margin Exceeds``.
Unknown keys and bad values raise :class:`ValueError` naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ACTIONS = ("feed_disconnect", "drop_feed", "drop_order_ws")


class FaultSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    http_429: int = 0
    http_5xx: int = 0
    delay_ms: int = 0
    http_path_prefix: str = "/v2/"
    http_method: str = ""
    reject_orders: int = 0
    reject_reason: str = ""
    timeout_after_accept: int = 0
    timeout_mode: Literal["drop", "delay"] = "drop"
    timeout_delay_ms: int = 15_000
    partial_fills: int = 0
    partial_fill_lots: int = 1
    partial_remainder: Literal["fill", "cancel", "expire"] = "fill"
    feed_duplicate: int = 0
    feed_reorder: int = 0
    feed_handshake_429: int = 0
    feed_disconnect_every_s: float = 0.0
    feed_disconnect_reason: int = 805
    drop_feed_every_s: float = 0.0
    drop_order_ws_every_s: float = 0.0


class FaultActions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    feed_disconnect: int | None = None
    drop_feed: bool = False
    drop_order_ws: bool = False


def _convert(data: dict[str, Any], typ: type) -> Any:
    try:
        return msgspec.convert(data, typ, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad fault setting: {exc}") from None


def parse_spec(spec: str) -> FaultSettings:
    """``"http_429=3,delay_ms=200"`` → :class:`FaultSettings`."""
    data: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bad fault spec item {part!r}: expected key=value")
        data[key.strip()] = value.strip()
    return _convert(data, FaultSettings)


class Faults:
    """The live fault state shared by the REST app, the feed and the order-update socket."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()

    def update(self, changes: dict[str, Any]) -> FaultActions:
        """Merge setting changes; return the actions asked for (not stored)."""
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of fault settings")
        actions = _convert({k: v for k, v in changes.items() if k in ACTIONS}, FaultActions)
        merged = msgspec.to_builtins(self.settings)
        merged.update({k: v for k, v in changes.items() if k not in ACTIONS})
        self.settings = _convert(merged, FaultSettings)
        return actions

    def reset(self) -> None:
        self.settings = FaultSettings()

    def take(self, name: str) -> bool:
        """Consume one unit of counter ``name``; True when the fault fires."""
        left = getattr(self.settings, name)
        if left > 0:
            setattr(self.settings, name, left - 1)
            return True
        return False

    def applies_to(self, path: str, method: str = "") -> bool:
        want = self.settings.http_method.upper()
        return path.startswith(self.settings.http_path_prefix) and (not want or method.upper() == want)

    def snapshot(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.settings)
