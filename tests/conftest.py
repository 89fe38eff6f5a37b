"""Shared fixtures. Integration fixtures need Redis/PostgreSQL on localhost (see .ci/run)."""

from __future__ import annotations

import os
import random
import uuid

import pytest

pytest_plugins = ["tests.integration.pg"]

SEED = int(os.environ.get("TEST_SEED", "20261125"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"random seed: {SEED} (set TEST_SEED to change)"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def namespace(redis_url: str):
    """A fresh key namespace; every key under it is deleted afterwards."""
    import redis

    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=f"scalper:{{{ns}}}:*", count=1000):
        r.delete(k)
    r.close()


@pytest.fixture
def sync_redis(redis_url: str):
    import redis

    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()
