"""The project's one exception tree.

    ScalperError
    ├── ConfigError            bad config: names the key path and the problem
    ├── DecodeError            a stream entry or feed packet that cannot be decoded
    │   └── PacketError        a truncated or unknown DhanHQ binary packet
    ├── StoreError             PostgreSQL failures (translated from psycopg)
    ├── BusError               Redis failures (translated from redis-py)
    ├── BrokerError            DhanHQ answered with an error (translated from httpx / DH-9xx / 8xx)
    │   ├── BrokerAuthError    DH-901, 807-810: halt, never retry
    │   ├── BrokerRateLimited  DH-904 / HTTP 429: back off and retry
    │   ├── BrokerUnavailable  5xx, timeouts, network errors: retry reads, look up orders
    │   └── BrokerRejected     DH-905/906/...: the request itself is refused
    └── TradingHalted          the trading state forbids the action
"""

from __future__ import annotations

import psycopg
from redis.exceptions import RedisError


class ScalperError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(ScalperError):
    """Invalid configuration; the message names the key path."""


class DecodeError(ScalperError):
    """A message or packet that cannot be decoded or validated."""


class PacketError(DecodeError):
    """A truncated or unknown DhanHQ binary feed packet."""


class StoreError(ScalperError):
    """A PostgreSQL failure."""


class BusError(ScalperError):
    """A Redis failure."""


class BrokerError(ScalperError):
    """DhanHQ answered with an error or could not be reached."""

    def __init__(self, message: str, *, code: str = "", http_status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class BrokerAuthError(BrokerError):
    """Authentication failed (DH-901, 807-810): halt instead of retrying."""


class BrokerRateLimited(BrokerError):
    """Rate limited (DH-904 / HTTP 429)."""


class BrokerUnavailable(BrokerError):
    """5xx, timeout or network failure."""


class BrokerRejected(BrokerError):
    """The broker refused the request itself (input, order or data errors)."""


class TradingHalted(ScalperError):
    """The trading state forbids this action."""


INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (BusError, StoreError, RedisError, psycopg.OperationalError)
"""Redis or PostgreSQL out of reach: a service exits and is restarted (start-up is recovery);
never a reason to change the trading state."""
