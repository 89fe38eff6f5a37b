"""Which errors are infrastructure (restart and recover) and which halt trading."""

from __future__ import annotations

import psycopg
import pytest
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.errors import INFRASTRUCTURE_ERRORS, BrokerRejected, BusError, DecodeError, StoreError


@pytest.mark.parametrize("exc", [
    BusError("commit failed for group executor: Connection closed by server."),
    StoreError("connection lost"),
    RedisConnectionError("Connection closed by server."),
    BusyLoadingError("Redis is loading the dataset in memory"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
])
def test_redis_or_postgres_out_of_reach_is_infrastructure(exc: BaseException) -> None:
    # The executor re-raises these (the process restarts and recovers) instead of halting:
    # a Redis restart mid-replay once halted trading and changed the day's trades.
    assert isinstance(exc, INFRASTRUCTURE_ERRORS)


@pytest.mark.parametrize("exc", [TypeError("bad call"), KeyError("x"), DecodeError("bad entry"),
                                 BrokerRejected("DH-905")])
def test_logic_and_broker_errors_are_not_infrastructure(exc: BaseException) -> None:
    assert not isinstance(exc, INFRASTRUCTURE_ERRORS)
