"""The stream runtime: consumer groups, batched reads, atomic commit, dead letters, heartbeats.

Every service reads its inputs through its own consumer group (group name = service name) and
commits each batch with one Lua script that, atomically:

1. publishes the batch's outputs, each at most once (a per-stream set of published ``msg_id``s
   makes publishing idempotent, so re-processing after a crash duplicates nothing);
2. acknowledges the input entries;
3. stores the service's checkpoint (its state snapshot) and its frontier.

So "outputs written, then ack" holds by construction, and a crash at any instant either loses
the whole commit (the entries stay pending and are re-read on restart) or none of it.

Start-up is the recovery path: the consumer first re-reads its own pending entries, then claims
entries stuck with dead consumers (``XAUTOCLAIM``), then reads new ones.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from shared import wire
from shared.errors import BusError, DecodeError
from shared.keys import Keys
from shared.messages import DeadLetter, Message, make_msg_id

log = logging.getLogger(__name__)

# Lua: outputs (idempotent by msg_id), acks, plain SETs — one atomic step.
# ARGV[1] is a JSON plan; ARGV[2..] are raw values referenced by the plan's "set" entries.
_COMMIT_LUA = """
local plan = cjson.decode(ARGV[1])
local published = 0
for _, o in ipairs(plan.out) do
  local stream = KEYS[o[1]]
  local dedupe = KEYS[o[2]]
  if redis.call('SISMEMBER', dedupe, o[4]) == 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', o[3], '*', 'type', o[5], 'data', o[6])
    redis.call('SADD', dedupe, o[4])
    published = published + 1
  end
end
for _, d in ipairs(plan.ttl) do
  redis.call('EXPIRE', KEYS[d[1]], d[2])
end
for _, a in ipairs(plan.ack) do
  local ids = a[3]
  local n = #ids
  local i = 1
  while i <= n do
    local j = math.min(i + 999, n)
    redis.call('XACK', KEYS[a[1]], a[2], unpack(ids, i, j))
    i = j + 1
  end
end
for _, s in ipairs(plan.set) do
  redis.call('SET', KEYS[s[1]], ARGV[s[2]])
end
return published
"""

DEDUPE_TTL_S = 3 * 86_400


@dataclass(slots=True)
class Entry:
    """One decoded input entry."""

    stream: str  # logical name
    entry_id: str
    msg: Message


@dataclass(slots=True)
class Batch:
    entries: list[Entry] = field(default_factory=list)
    dead: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)
    """(logical stream, entry id, original fields, error) for entries that failed to decode."""

    def __bool__(self) -> bool:
        return bool(self.entries or self.dead)


@dataclass(slots=True)
class Commit:
    """What a handled batch writes, atomically with its acks."""

    outputs: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(logical stream, msg_id, type, JSON data) in publishing order."""
    acks: list[tuple[str, str]] = field(default_factory=list)  # (logical stream, entry id)
    sets: dict[str, bytes] = field(default_factory=dict)  # real key -> raw value

    def emit(self, stream: str, msg: Message) -> None:
        fields = wire.encode(msg)
        self.outputs.append((stream, msg.msg_id, fields["type"].decode(), fields["data"].decode()))

    def emit_raw(self, stream: str, msg_id: str, type_: str, data: str) -> None:
        """Publish an already-encoded message (from the executor's outbox)."""
        self.outputs.append((stream, msg_id, type_, data))

    def ack(self, stream: str, entry_id: str) -> None:
        self.acks.append((stream, entry_id))


def instance_name() -> str:
    """A consumer name that survives restarts, so a restarted process re-reads its own pending
    entries first, in order (a new name would only get them by XAUTOCLAIM, after newer ones).
    Several instances of one service on one host set SCALPER_INSTANCE (supervisord's
    ``%(process_num)d``)."""
    return os.environ.get("SCALPER_INSTANCE") or socket.gethostname()


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client returning bytes."""
    return aioredis.from_url(url, decode_responses=False, health_check_interval=30)


@dataclass(slots=True)
class Prepared:
    """A commit ready to send: alone (:meth:`run`) or ahead of a read in one round trip."""

    bus: Bus
    group: str
    keys: list[str]
    args: list[bytes]

    async def run(self) -> int:
        try:
            return int(await self.bus._commit(keys=self.keys, args=self.args))
        except RedisError as exc:
            raise BusError(f"commit failed for group {self.group}: {exc}") from exc

    def queue(self, pipe: Any) -> None:
        """Add the commit to a pipeline by its sha (no script check: NOSCRIPT is handled)."""
        pipe.evalsha(self.bus._commit.sha, len(self.keys), *self.keys, *self.args)

    def failed(self, result: Any) -> None:
        """Raise :class:`BusError` if ``result`` (the pipelined commit's reply) is an error."""
        if isinstance(result, Exception):
            raise BusError(f"commit failed for group {self.group}: {result}") from result


class Bus:
    """Publishing and committing for one namespace."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, maxlen: dict[str, int]) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self._commit = redis.register_script(_COMMIT_LUA)

    def _maxlen(self, logical: str) -> int:
        return int(self.maxlen.get(logical, 100_000))

    def prepare(self, group: str, commit: Commit) -> Prepared | None:
        """The commit script's keys and arguments for ``commit``; None when it writes nothing."""
        key_index: dict[str, int] = {}
        keys: list[str] = []

        def kidx(k: str) -> int:
            if k not in key_index:
                keys.append(k)
                key_index[k] = len(keys)
            return key_index[k]

        out = []
        ttl_keys: set[int] = set()
        for logical, msg_id, type_, data in commit.outputs:
            d = kidx(self.keys.dedupe(logical))
            ttl_keys.add(d)
            out.append([kidx(self.keys.stream(logical)), d, self._maxlen(logical), msg_id, type_, data])
        acks_by_stream: dict[str, list[str]] = {}
        for logical, eid in commit.acks:
            acks_by_stream.setdefault(logical, []).append(eid)
        ack = [[kidx(self.keys.stream(s)), group, ids] for s, ids in acks_by_stream.items()]
        sets = []
        argv: list[bytes] = []
        for i, (k, v) in enumerate(commit.sets.items()):
            sets.append([kidx(k), i + 2])
            argv.append(v)
        if not out and not ack and not sets:
            return None
        # cjson decodes an empty JSON array as an object; ipairs over it is still empty.
        plan = {"out": out, "ack": ack, "set": sets, "ttl": [[k, DEDUPE_TTL_S] for k in ttl_keys]}
        return Prepared(self, group, keys, [orjson.dumps(plan), *argv])

    async def commit(self, group: str, commit: Commit) -> int:
        """Publish outputs (idempotently), ack inputs and store sets in one atomic step."""
        prepared = self.prepare(group, commit)
        return 0 if prepared is None else await prepared.run()

    async def publish(self, logical: str, msgs: Iterable[Message], group: str = "-") -> int:
        """Publish messages idempotently (no acks)."""
        c = Commit()
        for m in msgs:
            c.emit(logical, m)
        return await self.commit(group, c)


def dead_letter(
    service: str, logical: str, entry_id: str, fields: dict[str, str], error: str, ts_init: int
) -> DeadLetter:
    return DeadLetter(
        msg_id=make_msg_id("dl", service, logical, entry_id),
        ts_event=ts_init,
        ts_init=ts_init,
        tick_id="",
        error=error[:2000],
        source_stream=logical,
        entry_id=entry_id,
        fields=fields,
        service=service,
    )


def _fields_to_str(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {
        k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()
    }


class Consumer:
    """Reads a service's input streams through its consumer group.

    Reading order: own pending entries (from id 0), then entries claimed from dead consumers
    (``XAUTOCLAIM`` with ``claim_idle_ms``), then new entries (``>``). Claiming is repeated
    every ``claim_idle_ms`` while running.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        group: str,
        consumer: str,
        inputs: Sequence[str],
        *,
        batch_size: int = 500,
        block_ms: int = 200,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.inputs = list(inputs)
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self._decoders = {s: wire.StreamDecoder(s) for s in self.inputs}
        self._phase = "pending"
        self._pending_cursor = {s: "0-0" for s in self.inputs}
        self._last_claim = time.monotonic()
        self.stats = {"read": 0, "dead": 0, "claimed": 0}

    def _claim_due(self) -> bool:
        return time.monotonic() - self._last_claim > self.claim_idle_ms / 1000

    async def _commit_and_read(self, after: Prepared, wanted: dict[str, str], block_ms: int | None) -> Any:
        pipe = self.redis.pipeline(transaction=False)
        after.queue(pipe)
        pipe.xreadgroup(self.group, self.consumer, wanted, count=self.batch_size, block=block_ms)
        committed, resp = await pipe.execute(raise_on_error=False)
        if isinstance(committed, NoScriptError):  # Redis lost its scripts (restart, SCRIPT FLUSH)
            await after.run()  # loads it; nothing read since depends on the commit
        else:
            after.failed(committed)
        if isinstance(resp, Exception):
            raise resp
        return resp

    async def ensure_groups(self, start_id: str = "0") -> None:
        for s in self.inputs:
            try:
                await self.redis.xgroup_create(self.keys.stream(s), self.group, id=start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise BusError(f"cannot create group {self.group} on {s}: {exc}") from exc

    def _decode(self, logical: str, raw: list[tuple[bytes, dict[bytes, bytes]]], batch: Batch) -> None:
        dec = self._decoders[logical]
        for eid_b, fields in raw:
            eid = eid_b.decode()
            if not fields:  # deleted/trimmed entry still in the PEL
                batch.dead.append((logical, eid, {}, "entry no longer exists (trimmed or deleted)"))
                continue
            try:
                batch.entries.append(Entry(logical, eid, dec.decode(fields)))
            except DecodeError as exc:
                batch.dead.append((logical, eid, _fields_to_str(fields), str(exc)))

    async def read(
        self, block: bool = True, only: Sequence[str] | None = None, after: Prepared | None = None,
    ) -> Batch:
        """The next batch: pending first, then claimed, then new entries.

        ``after`` is the previous batch's commit: it is sent first, and when the read is a plain
        read of new entries, in the same round trip (Redis runs the commit, then the read), so a
        handled batch costs one round trip instead of two. A failed commit raises
        :class:`BusError` and the entries just read stay pending for the next start.
        """
        streams = list(only) if only else self.inputs
        batch = Batch()
        if after is not None and (self._phase != "new" or self._claim_due()):
            await after.run()
            after = None
        try:
            if self._phase == "pending":
                resp = await self.redis.xreadgroup(
                    self.group, self.consumer,
                    {self.keys.stream(s): self._pending_cursor[s] for s in streams},
                    count=self.batch_size,
                )
                got = False
                for key, raw in resp or []:
                    logical = self.keys.logical(key.decode())
                    if raw:
                        got = True
                        self._pending_cursor[logical] = raw[-1][0].decode()
                        self._decode(logical, raw, batch)
                if got:
                    self.stats["read"] += len(batch.entries) + len(batch.dead)
                    return batch
                self._phase = "claim"
            if self._phase == "claim" or self._claim_due():
                self._last_claim = time.monotonic()
                self._phase = "new"
                for s in streams:
                    # Claim only *other* consumers' stale entries: our own pending entries may be
                    # held on purpose (a stage waiting on a gate) and must not be delivered twice.
                    key = self.keys.stream(s)
                    stale = await self.redis.xpending_range(
                        key, self.group, min="-", max="+", count=self.batch_size, idle=self.claim_idle_ms)
                    ids = [p["message_id"] for p in stale
                           if (p["consumer"].decode() if isinstance(p["consumer"], bytes) else p["consumer"]) != self.consumer]
                    if not ids:
                        continue
                    claimed = await self.redis.xclaim(key, self.group, self.consumer,
                                                      min_idle_time=self.claim_idle_ms, message_ids=ids)
                    self.stats["claimed"] += len(claimed)
                    self._decode(s, claimed, batch)
                    got = {c[0] for c in claimed}
                    for mid in ids:  # trimmed or deleted meanwhile (Redis drops them from the PEL)
                        if mid not in got:
                            mid_s = mid.decode() if isinstance(mid, bytes) else str(mid)
                            batch.dead.append((s, mid_s, {}, "claimed entry no longer exists (trimmed or deleted)"))
                if batch:
                    self.stats["read"] += len(batch.entries) + len(batch.dead)
                    return batch
            wanted = {self.keys.stream(s): ">" for s in streams}
            block_ms = self.block_ms if block else None
            if after is None:
                resp = await self.redis.xreadgroup(
                    self.group, self.consumer, wanted, count=self.batch_size, block=block_ms)
            else:
                resp = await self._commit_and_read(after, wanted, block_ms)
        except RedisError as exc:
            raise BusError(f"read failed for group {self.group}: {exc}") from exc
        for key, raw in resp or []:
            self._decode(self.keys.logical(key.decode()), raw, batch)
        self.stats["read"] += len(batch.entries) + len(batch.dead)
        return batch


async def heartbeat(
    redis: aioredis.Redis, keys: Keys, service: str, instance: str, ttl_s: int, info: dict[str, Any]
) -> None:
    """Refresh this instance's heartbeat key (JSON with the wall time and stats)."""
    payload = orjson.dumps({"service": service, "instance": instance, "ts": time.time_ns(), **info})
    try:
        await redis.set(keys.heartbeat(service, instance), payload, ex=ttl_s)
    except RedisError as exc:
        log.warning("heartbeat failed: %s", exc)


async def group_state(redis: aioredis.Redis, stream_key: str, group: str) -> tuple[int, int]:
    """(lag, pending) of a consumer group; a missing stream or group counts as (0, 0)."""
    try:
        groups = await redis.xinfo_groups(stream_key)
    except ResponseError:
        return 0, 0
    for g in groups:
        name = g.get("name") or g.get(b"name")
        if isinstance(name, bytes):
            name = name.decode()
        if name == group:
            lag = g.get("lag", g.get(b"lag"))
            pending = int(g.get("pending", g.get(b"pending")) or 0)
            if lag is None:  # Redis could not compute the lag (after XDEL/trim): be conservative
                lag = 1
            return int(lag), pending
    return 0, 0
