"""The service loop shared by every process: read, handle, commit, heartbeat, drain on SIGTERM.

A service implements :class:`Service`; ``run`` drives it. ``burst`` mode (tests, replays) makes
the loop finite: it returns once a read finds nothing new and the service says it is drained.

A handled batch's commit goes out with the next read, in one round trip (Redis runs the commit,
then the read; see :meth:`shared.bus.Consumer.read`): the outputs are visible as soon as before,
and a batch costs one round trip instead of two. On the way out the last commit is sent alone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import redis.asyncio as aioredis

from shared.bus import Batch, Bus, Commit, Consumer, Prepared, dead_letter, heartbeat, instance_name
from shared.clock import Clock
from shared.config import Config
from shared.keys import Keys
from shared.ops.metrics import LatencyHistograms

log = logging.getLogger(__name__)


class Stopping(Exception):
    """Raised inside a handler to abandon the batch (uncommitted) because the service is stopping."""


class Context:
    """What a service gets: config, Redis, bus, keys, clock, its names and the stop flag."""

    def __init__(
        self, config: Config, redis: aioredis.Redis, service: str, *, clock: Clock | None = None,
        instance: str | None = None,
    ) -> None:
        self.config = config
        self.redis = redis
        self.service = service
        self.instance = instance or instance_name()
        self.keys = Keys(config.env.namespace)
        self.bus = Bus(redis, self.keys, dict(config.algo.streams.maxlen))
        self.clock = clock or Clock()
        self.stop_event = asyncio.Event()
        self.burst = False

    @property
    def replay(self) -> bool:
        return self.config.env.replay

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    async def sleep(self, seconds: float) -> None:
        """Sleep that wakes early and raises :class:`Stopping` when the service is told to stop."""
        try:
            async with asyncio.timeout(seconds):
                await self.stop_event.wait()
        except TimeoutError:
            return
        raise Stopping()


class Service:
    """Base of the six services. Override what you need."""

    name = "service"
    inputs: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.handled = 0
        self.metrics = LatencyHistograms()

    @property
    def group(self) -> str:
        """The consumer group (and heartbeat name); partitioned services override it."""
        return self.name

    async def start(self) -> None:
        """Restore state (checkpoint, Postgres) before the first read."""

    async def handle(self, batch: Batch) -> Commit:
        """Handle a batch; return what to write and which entries to ack."""
        c = Commit()
        for e in batch.entries:
            c.ack(e.stream, e.entry_id)
        return c

    async def idle(self) -> None:
        """Called when a read found nothing (timers, housekeeping)."""

    def drained(self) -> bool:
        """Burst mode: may the loop end now that a read found nothing?"""
        return True

    def info(self) -> dict[str, Any]:
        """Extra fields for the heartbeat."""
        return {}

    async def stop(self) -> None:
        """Release resources after the loop ends."""


async def run(svc: Service, *, burst: bool = False, install_signals: bool = True) -> int:
    """Drive ``svc`` until SIGTERM/SIGINT (or, in burst mode, until drained). Returns an exit code."""
    ctx = svc.ctx
    ctx.burst = burst
    cfg = ctx.config.algo.runtime
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctx.stop_event.set)
    consumer = None
    if svc.inputs:
        consumer = Consumer(
            ctx.redis, ctx.keys, svc.group, f"{svc.group}-{ctx.instance}", svc.inputs,
            batch_size=cfg.batch_size, block_ms=cfg.block_ms, claim_idle_ms=cfg.claim_idle_ms,
        )
        await consumer.ensure_groups()
    svc.consumer = consumer  # type: ignore[attr-defined]
    await svc.start()
    log.info("started", extra={"fields": {"instance": ctx.instance, "inputs": list(svc.inputs)}})
    last_hb = 0.0
    after: Prepared | None = None  # the last batch's commit, sent with the next read
    try:
        while not ctx.stopping:
            now = time.monotonic()
            if now - last_hb >= 1.0:
                last_hb = now
                await heartbeat(ctx.redis, ctx.keys, svc.group, ctx.instance, cfg.heartbeat_ttl_s,
                                {"handled": svc.handled, **svc.info()})
                await ctx.redis.set(ctx.keys.metrics(svc.group),
                                    svc.metrics.to_json(svc.group, time.time_ns(), ctx.instance),
                                    ex=cfg.heartbeat_ttl_s)
            if consumer is None:
                try:
                    await svc.idle()
                except Stopping:
                    break
                if burst and svc.drained():
                    break
                continue
            pending, after = after, None  # a failed read loses it: its entries stay pending
            batch = await consumer.read(block=True, after=pending)
            if not batch:
                await svc.idle()
                if burst and svc.drained():
                    break
                continue
            ok, after = await _handle_with_drain(svc, batch, cfg.drain_deadline_s)
            if not ok:
                break
    finally:
        try:
            if after is not None:  # the last handled batch (stopping): committed before we go
                await after.run()
        finally:
            await svc.stop()
        try:
            await ctx.redis.delete(ctx.keys.heartbeat(svc.group, ctx.instance))
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
    log.info("stopped", extra={"fields": {"handled": svc.handled}})
    return 0


async def _handle_with_drain(svc: Service, batch: Batch, deadline_s: float) -> tuple[bool, Prepared | None]:
    """Handle one batch; on SIGTERM give it ``deadline_s`` to finish.

    Returns (go on?, the batch's commit, to send with the next read; None when it writes nothing
    or the batch was abandoned uncommitted).
    """
    ctx = svc.ctx
    work = asyncio.ensure_future(_handle(svc, batch))
    stop_wait = asyncio.ensure_future(ctx.stop_event.wait())
    try:
        await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            try:
                await asyncio.wait_for(asyncio.shield(work), timeout=deadline_s)
            except TimeoutError:
                work.cancel()
                log.warning("drain deadline passed; in-flight entries stay pending for the next start")
                return False, None
        prepared = work.result()
    except Stopping:
        log.info("stopping mid-batch; entries stay pending for the next start")
        return False, None
    finally:
        stop_wait.cancel()
    return True, prepared


async def _handle(svc: Service, batch: Batch) -> Prepared | None:
    ctx = svc.ctx
    t0 = time.time_ns()
    for e in batch.entries:  # wall time from the producer building the message to us reading it
        if e.msg.ts_init:
            svc.metrics.observe("queue", max(0, t0 - e.msg.ts_init) / 1e6)
    commit = await svc.handle(batch)
    svc.metrics.observe("batch", (time.time_ns() - t0) / 1e6)
    now = ctx.clock.now_ns()
    for logical, eid, fields, error in batch.dead:
        log.warning("dead letter", extra={"fields": {"stream": logical, "entry_id": eid, "error": error}})
        commit.emit("deadletter", dead_letter(svc.name, logical, eid, fields, error, now))
        commit.ack(logical, eid)
    svc.handled += len(batch.entries)
    return ctx.bus.prepare(svc.group, commit)


def main_wrapper(build: Any, service: str) -> int:
    """Common ``__main__``: load config, set up logging, connect, run. Exits 2 on bad config."""
    import os
    import sys

    from shared import bus as busmod
    from shared import logs
    from shared.config import load
    from shared.errors import ConfigError

    try:
        config = load()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    logs.setup(service, config.env.log_level, [config.env.access_token])
    burst = os.environ.get("SCALPER_BURST", "").lower() in ("1", "true", "yes")

    async def _main() -> int:
        redis = busmod.connect(config.env.redis_url)
        ctx = Context(config, redis, service)
        svc = build(ctx)
        try:
            return await run(svc, burst=burst)
        finally:
            await redis.aclose()

    return asyncio.run(_main())
