"""The relay's store in Redis (production): async Redis over one multiplexed connection per
process (proxy.redis_client), so no thread hop on the hot path, and every worker process shares
snapshots, reservations and running totals. Compound steps are the Lua scripts below, atomic
across processes. See proxy.store for what the store does.
"""

import asyncio
import functools
import json
import logging
import os
import secrets
import socket
import time
from pathlib import Path

from django.conf import settings

from billing import ledger
from billing.refusals import Refusal
from billing.windows import Targets
from core import keyspace

from ..quota import Admission, Plan, Refused
from ..redis_client import Encoded, RedisClient, RedisError, RedisReplyError
from ..spool import Spool
from .channel_health import RedisChannelHealth

logger = logging.getLogger("proxy.store")


# KEYS: the limits' running totals (n), the reservation hashes the hold goes into (h; the
# key's first: its holds are the requests in flight), the key's rate log. ARGV: hold id,
# estimate, minimum, now, deadline, hold seconds, n, h, max concurrency (0: none), rate count
# (0: none), rate period (ms), this worker's id, the prefix of workers' liveness keys in the
# team's shard, then per limit: its limit and the index (1..h) of the hash its reservations
# are in. Every key, and the liveness keys it builds from that prefix, carries the hash tag of
# the key's team (core.keyspace): one Redis Cluster slot.
# Returns {-1, i...}: these totals are missing (the caller rebuilds them); {0, i, spent,
# reserved}: limit i cannot pay; {2, in flight}: the concurrency is full; {3, ms}: the rate is
# used up for that long; {1, held}: admitted, `held` reserved in every hash, the request in the
# rate's log.
# A hash keeps the sum of its holds (core.keyspace.HOLDS_SUM), so an admission reads it in
# O(1) rather than every request in flight. Holds past their deadline or of a worker that has
# died still count in it (which can only refuse early), so when the sums would refuse (or hold
# less than the estimate), they are dropped (a scan) and the admission decided again: a killed
# worker's holds stop counting within seconds, and the common case costs no scan.
_ADMIT = (
    keyspace.HOLDS_LUA
    + """
local n, h = tonumber(ARGV[7]), tonumber(ARGV[8])
local spent, missing = {}, {-1}
if n > 0 then
  local values = redis.call('MGET', unpack(KEYS, 1, n))
  for i = 1, n do
    if values[i] then spent[i] = tonumber(values[i]) else missing[#missing + 1] = i end
  end
end
if #missing > 1 then return missing end
local now = tonumber(ARGV[4])
local alive = {[ARGV[12]] = true}
local function live_worker(worker)
  if alive[worker] == nil then alive[worker] = redis.call('EXISTS', ARGV[13] .. worker) == 1 end
  return alive[worker]
end
-- Drop the hash's holds past their deadline or of dead workers; its sum and count after.
local function scan(name)
  local sum, count = 0, 0
  local entries = redis.call('HGETALL', name)
  for e = 1, #entries, 2 do
    if entries[e] ~= SUM then
      local amount, deadline, worker = string.match(entries[e + 1], '^(%d+):(%d+):?(.*)$')
      local dead = worker ~= '' and not live_worker(worker)
      if amount == nil or tonumber(deadline) < now or dead then
        redis.call('HDEL', name, entries[e])
      else
        sum = sum + tonumber(amount)
        count = count + 1
      end
    end
  end
  if count > 0 then redis.call('HSET', name, SUM, sum) else redis.call('DEL', name) end
  return sum, count
end
local estimate, minimum, most = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[9])
-- The requests in flight are counted in the key's hash (the first) only, and only when the
-- key has a concurrency limit.
local reserved, live = {}, {0}
for j = 1, h do
  local name = KEYS[n + j]
  local sum = redis.call('HGET', name, SUM)
  if sum then
    reserved[j] = tonumber(sum)
    if j == 1 and most > 0 then live[1] = redis.call('HLEN', name) - 1 end
  else  -- Empty, or written before its sum was kept.
    reserved[j], live[j] = scan(name)
  end
end
local held
local function refusal()
  held = estimate
  for i = 1, n do
    local j = tonumber(ARGV[13 + 2 * i])
    local left = tonumber(ARGV[12 + 2 * i]) - spent[i] - reserved[j]
    if left <= 0 or math.min(estimate, left) < minimum then
      return {0, i, spent[i], reserved[j]}
    end
    if left < held then held = left end
  end
  if most > 0 and live[1] >= most then return {2, live[1]} end
  return nil
end
if refusal() or held < estimate then
  for j = 1, h do reserved[j], live[j] = scan(KEYS[n + j]) end
  local refused = refusal()
  if refused then return refused end
end
local count = tonumber(ARGV[10])
if count > 0 then
  local log = KEYS[n + h + 1]
  local period = tonumber(ARGV[11])
  local time = redis.call('TIME')
  local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', ms - period)
  -- Counted once per request: an admission given back and made again (proxy.gate's Guess)
  -- keeps its place (NX). A request the log has no room for is taken out again.
  if redis.call('ZADD', log, 'NX', ms, ARGV[1]) == 1 and redis.call('ZCARD', log) > count then
    redis.call('ZREM', log, ARGV[1])
    local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
    return {3, tonumber(oldest[2]) + period - ms}
  end
  redis.call('PEXPIRE', log, period)
end
local entry = string.format('%d', held) .. ':' .. ARGV[5] .. ':' .. ARGV[12]
for j = 1, h do
  local name = KEYS[n + j]
  if redis.call('HSET', name, ARGV[1], entry) == 1 then
    redis.call('HINCRBY', name, SUM, held)
  else  -- Held already (never by design): summed afresh rather than counted twice.
    scan(name)
  end
  redis.call('EXPIRE', name, ARGV[6])
end
return {1, held}
"""
)

# KEYS: the reservation hashes. ARGV: hold id. Gives back an admission's reservations (not
# its place in the rate: a request refused after its admission, or cancelled, still counts).
_RELEASE = (
    keyspace.HOLDS_LUA
    + """
for i = 1, #KEYS do unhold(KEYS[i], ARGV[1]) end
return 1
"""
)

# KEYS: snapshot, generation. ARGV: snapshot, seconds, the generation read before the database
# was (empty when there was none). Stores the snapshot only if no change has bumped the
# generation since (keys.cache): a snapshot built before a change can never overwrite it.
_PUT_IF_CURRENT = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: the team's shard's stream and checkpoints, the running totals the charge raises
# (ARGV[6] of them), then the reservation hashes the hold is released from (all in the team's
# hash tag: one Redis Cluster slot). ARGV: event JSON, charge, hold id, whether the
# request wrote a checkpoint, the endpoint, how many totals, the 1-hour cache writes (these
# two beside the JSON: see UsageRecord.to_json; an earlier release's ingest reads "e" only).
# One atomic step: the event is durable in the stream exactly when its charge is in the
# totals (each only if it exists: a missing one is rebuilt from the database and the stream).
# A request whose checkpoint is gone although it wrote one was taken for dead and billed from
# it (billing.ledger.reap_checkpoints): not billed twice.
_RECORD = (
    keyspace.HOLDS_LUA
    + """
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 and ARGV[4] == '1' then return 0 end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 'p', ARGV[5], 'h', ARGV[7])
local count = tonumber(ARGV[6])
local totals = 2 + count
-- Usually every total is there: one EXISTS for all of them.
if count > 0 and redis.call('EXISTS', unpack(KEYS, 3, totals)) == count then
  for i = 3, totals do redis.call('INCRBY', KEYS[i], ARGV[2]) end
else
  for i = 3, totals do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[2]) end
  end
end
for i = totals + 1, #KEYS do unhold(KEYS[i], ARGV[3]) end
return 1
"""
)


# KEYS: the minutes' index. ARGV: the prefix of the minutes' counts, the refusal's field, the
# counts' lifetime. Adds 1 to the refusal's count for the current minute by Redis's clock, the
# one the collector (billing.services.refusals) tells closed minutes by: relay hosts whose
# clocks differ cannot add to a minute already collected. The minute's name is made here from
# that clock, so it is not in KEYS: it shares the index's hash tag ({refusals}, in the
# prefix), so it is in the same Redis Cluster slot as the declared key.
_COUNT_REFUSAL = """
local now = tonumber(redis.call('TIME')[1])
local minute = now - now % 60
local counts = ARGV[1] .. minute
redis.call('HINCRBY', counts, ARGV[2], 1)
redis.call('EXPIRE', counts, ARGV[3])
redis.call('SADD', KEYS[1], minute)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return minute
"""


class RedisStore:
    def __init__(self, redis: RedisClient | str) -> None:
        """`redis`: the relay's client (proxy.redis_connect.client_for), or a server's URL."""
        self.redis = RedisClient(redis) if isinstance(redis, str) else redis
        self._admit = self.redis.script(_ADMIT)
        # The admission's unchanging keys and arguments, by plan (see _admission_static).
        self._static: dict[int, tuple] = {}
        self._release = self.redis.script(_RELEASE)
        self._put_if_current = self.redis.script(_PUT_IF_CURRENT)
        self._record = self.redis.script(_RECORD)
        self._count_refusal = self.redis.script(_COUNT_REFUSAL)
        self.channel_health = RedisChannelHealth(self.redis)
        self.spool = Spool(Path(settings.RELAY_SPOOL_DIR), self._send_spooled)
        # This worker's id for its checkpoints, and the task keeping its key alive.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._alive: asyncio.Task | None = None
        self._alive_commands = [
            (
                "SET",
                keyspace.relay_alive(number, self.worker_id),
                1,
                "EX",
                ledger.RELAY_ALIVE_SECONDS,
            )
            for number in range(keyspace.SHARDS)
        ]

    async def get_key_state(self, digest: str) -> bytes | None:
        return await self.redis.execute("GET", keyspace.snapshot(digest))

    async def key_state_generation(self, digest: str) -> bytes:
        """Read before the database is (see keys.cache); pass it to put_key_state."""
        return await self.redis.execute("GET", keyspace.generation(digest)) or b""

    async def put_key_state(self, digest: str, raw: bytes, seconds: int, generation: bytes) -> bool:
        """Store the snapshot unless the key changed since `generation` was read."""
        stored = await self._put_if_current(
            keys=[keyspace.snapshot(digest), keyspace.generation(digest)],
            args=[raw, seconds, generation],
        )
        return stored == 1

    async def admit(self, plan: Plan, hold_id: str) -> Admission:
        """Admission.missing names the running totals not in the cache (the caller rebuilds
        them and asks again)."""
        await self._keep_alive_started()
        keys, args = self._admission_call(plan, hold_id)
        return _admission(await self._admit(keys=keys, args=args))

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission]:
        """The snapshot read and the admission, sent together: one round trip."""
        await self._keep_alive_started()
        keys, args = self._admission_call(plan, hold_id)
        raw, reply = await self.redis.execute_together(
            ("GET", keyspace.snapshot(digest)), self._admit.command(keys=keys, args=args)
        )
        if isinstance(raw, RedisReplyError):
            raise raw
        return raw, _admission(await self._admit.result(reply, keys=keys, args=args))

    def _admission_call(self, plan: Plan, hold_id: str) -> tuple[Encoded, list]:
        """The script's keys and arguments: what changes per request, then the rest, encoded
        once per plan (they showed in the relay's profile, encoded anew every request)."""
        keys, static = self._admission_static(plan)
        now = int(time.time())
        args = [
            hold_id,
            plan.estimate_units,
            plan.minimum_units,
            now,
            now + plan.hold_seconds,
            static,
        ]
        return keys, args

    def _admission_static(self, plan: Plan) -> tuple[Encoded, Encoded]:
        # Found by the identity of the plan's limits (worked out once per snapshot and window:
        # proxy.quota.spend_limits) and the key, not by hashing them.
        shape = (
            plan.key_id,
            plan.team_id,
            plan.holds,
            plan.max_concurrency,
            plan.rate,
            plan.hold_seconds,
        )
        known = self._static.get(id(plan.limits))
        if known is not None and known[0] is plan.limits and known[1] == shape:
            return known[2]
        rate = plan.rate
        keys = [limit.counter.name for limit in plan.limits]
        keys += plan.holds
        keys.append(keyspace.rate(plan.team_id, plan.key_id))
        args = [
            plan.hold_seconds,
            len(plan.limits),
            len(plan.holds),
            plan.max_concurrency,
            rate.count if rate else 0,
            rate.period_ms if rate else 0,
            self.worker_id,
            keyspace.relay_alive_prefix(keyspace.shard(plan.team_id)),
        ]
        for limit in plan.limits:
            args += [limit.limit_units, plan.holds.index(limit.counter.holds) + 1]
        encoded = (Encoded.of(keys), Encoded.of(args))
        if len(self._static) >= 10_000:
            self._static.clear()
        self._static[id(plan.limits)] = (plan.limits, shape, encoded)
        return encoded

    async def release(self, plan: Plan, hold_id: str) -> None:
        if plan.holds:
            await self._release(keys=list(plan.holds), args=[hold_id])

    async def record(
        self,
        record: ledger.UsageRecord,
        *,
        hold_id: str,
        targets: Targets | None = None,
        checkpointed: bool = False,
    ) -> None:
        """Append the usage, raise the running totals and release the request's hold, in one
        script; if Redis cannot take it, the record waits in the spool (proxy.spool)."""
        record_json = record.to_json()
        targets = targets or Targets.of_key(record.team_id, record.key_id)
        try:
            recorded = await self._send_record(record, record_json, hold_id, targets, checkpointed)
        except RedisError as error:
            logger.warning(
                "Could not record usage of key %s in Redis (%s); spooled on disk",
                record.key_id,
                error,
            )
            await self.spool.keep(record_json, hold_id, targets, record.cache_creation_1h_tokens)
            return
        if not recorded:
            logger.warning(
                "Usage of request %s was billed from its last checkpoint: this worker was "
                "taken for dead",
                record.request_id,
            )

    async def count_refusal(self, refusal: Refusal) -> None:
        """Add 1 to the refusal's count for this minute: one script, one round trip, however
        often the key is refused (billing.refusals). Not spooled: a count lost while Redis is
        down is not worth the disk."""
        await self._count_refusal(
            keys=[keyspace.REFUSAL_MINUTES],
            args=[keyspace.REFUSALS_PREFIX, refusal.field(), keyspace.REFUSAL_COUNT_SECONDS],
        )

    async def checkpoint(
        self, record: ledger.UsageRecord, *, hold_id: str, targets: Targets | None = None
    ) -> None:
        """Keep what a stream has used so far, to be billed if this worker dies before it
        records the whole (billing.ledger.reap_checkpoints)."""
        await self._keep_alive_started()
        targets = targets or Targets.of_key(record.team_id, record.key_id)
        checkpoint = {
            "w": self.worker_id,
            "k": record.key_id,
            "c": record.charge_units,
            "e": record.to_json(),
            "o": record.cache_creation_1h_tokens,
            "n": targets.counters,
            "h": targets.holds,
        }
        await self.redis.execute(
            "HSET",
            keyspace.checkpoints(keyspace.shard(record.team_id)),
            hold_id,
            json.dumps(checkpoint, separators=(",", ":")),
        )

    async def _keep_alive_started(self) -> None:
        """This worker is alive before its first reservation or checkpoint can be seen (an
        admission drops the reservations of workers that are not)."""
        if self._alive is None:
            await self._renew_alive()
            self._alive = asyncio.get_running_loop().create_task(self._keep_alive())

    async def _renew_alive(self) -> None:
        """This worker's liveness, in every shard: the admission and the reaper read it in the
        slot of the holds and checkpoints they look at (core.keyspace). One write of 64 SETs,
        every RELAY_ALIVE_SECONDS / 5, off the requests' path."""
        replies = await self.redis.execute_together(*self._alive_commands)
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(ledger.RELAY_ALIVE_SECONDS / 5)
            try:
                await self._renew_alive()
            except RedisError as error:
                logger.warning("Could not renew this relay worker's liveness (%s)", error)

    async def _send_record(
        self,
        record: ledger.UsageRecord,
        record_json: str,
        hold_id: str,
        targets: Targets,
        checkpointed: bool = False,
    ) -> bool:
        recorded = await self._record(
            keys=_record_keys(targets, keyspace.shard(record.team_id)),
            args=[
                record_json,
                record.charge_units,
                hold_id,
                int(checkpointed),
                record.endpoint,
                len(targets.counters),
                record.cache_creation_1h_tokens,
            ],
        )
        return recorded == 1

    async def _send_spooled(
        self, record_json: str, hold_id: str, targets: Targets, one_hour_writes: int
    ) -> None:
        record = ledger.UsageRecord.from_json(record_json, cache_creation_1h_tokens=one_hour_writes)
        await self._send_record(record, record_json, hold_id, targets)

    async def close(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
        await self.channel_health.close()
        await self.redis.close()


@functools.lru_cache(maxsize=4096)
def _record_keys(targets: Targets, number: int) -> Encoded:
    """The record script's keys for these targets, in shard `number` (the record's team's),
    encoded once per window (Targets are worked out once per account and window:
    billing.windows)."""
    return Encoded.of(
        [
            keyspace.usage_stream(number),
            keyspace.checkpoints(number),
            *targets.counters,
            *targets.holds,
        ]
    )


def _admission(reply: list) -> Admission:
    status = int(reply[0])
    if status == -1:
        return Admission(False, missing=tuple(int(index) - 1 for index in reply[1:]))
    if status == 1:
        return Admission(True, held_units=int(reply[1]))
    if status == 0:
        return Admission(
            False, int(reply[2]), int(reply[3]), refused=Refused.SPEND, limit=int(reply[1]) - 1
        )
    if status == 2:
        return Admission(False, refused=Refused.CONCURRENCY, in_flight=int(reply[1]))
    return Admission(False, refused=Refused.RATE, retry_after_ms=int(reply[1]))
