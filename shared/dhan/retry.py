"""The one retry helper for expected broker failures: bounded attempts, capped backoff, jitter.

Retry number ``i`` (0 for the first retry) waits a random time in ``[c / 2, c]`` seconds with
``c = min(cap_s, base_s * multiplier ** i)`` ("equal jitter": spread out, but never ~0 after a
429). The RNG and the sleep are injected, so a test with a seeded ``random.Random`` and a fake
sleep sees exact, instant delays.

Only exceptions listed in ``retry_on`` are retried (by default :class:`BrokerRateLimited` and
:class:`BrokerUnavailable`); :class:`BrokerAuthError` and :class:`BrokerRejected` never are. An
exception class that sets ``retry_safe = False`` is never retried even when it matches
``retry_on``: ``rest.OrderInDoubt`` does, because an order POST must not be repeated blindly.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from shared.errors import BrokerRateLimited, BrokerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

RETRYABLE: tuple[type[BaseException], ...] = (BrokerRateLimited, BrokerUnavailable)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``attempts`` counts every try, the first included (1 means no retry)."""

    attempts: int = 4
    base_s: float = 0.5
    multiplier: float = 2.0
    cap_s: float = 8.0


def backoff_s(policy: RetryPolicy, retry_index: int, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry_index`` (0-based); draws one number from rng."""
    ceiling = min(policy.cap_s, policy.base_s * policy.multiplier**retry_index)
    return rng.uniform(ceiling / 2, ceiling)


def is_retryable(exc: BaseException, retry_on: tuple[type[BaseException], ...] = RETRYABLE) -> bool:
    return isinstance(exc, retry_on) and getattr(exc, "retry_safe", True)


class Retrier:
    """Runs an async call under a :class:`RetryPolicy` with an injected sleep and RNG."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        if self.policy.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.policy.attempts}")
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        what: str = "call",
        retry_on: tuple[type[BaseException], ...] = RETRYABLE,
    ) -> T:
        """Await ``call()`` until it succeeds, raises a non-retryable error or attempts run out.

        The last error is re-raised unchanged. ``what`` names the call in the warning logged
        before each retry (it must not hold secrets; exception texts are already redacted).
        """
        attempt = 1
        while True:
            try:
                return await call()
            except Exception as exc:
                if attempt >= self.policy.attempts or not is_retryable(exc, retry_on):
                    raise
                delay = backoff_s(self.policy, attempt - 1, self._rng)
                log.warning(
                    "retrying after broker error",
                    extra={
                        "fields": {
                            "call": what,
                            "error": type(exc).__name__,
                            "code": getattr(exc, "code", ""),
                            "attempt": attempt,
                            "attempts": self.policy.attempts,
                            "delay_s": round(delay, 3),
                        }
                    },
                )
                await self._sleep(delay)
                attempt += 1
