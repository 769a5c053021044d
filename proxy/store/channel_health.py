"""The channel circuit breaker's shared state (proxy.breaker decides; this keeps the state).

What a worker must know on every request is which of its group's channels are unhealthy: open
(skipped for the cool-down), or closed with failures in a row (so a success must reset them).
That is the `view`, a dict in this worker's memory, read with no I/O. Healthy channels are not
in it, so a request whose channels are all healthy makes no Redis call for the breaker at all.

How the view stays current (RedisStore), and why not the alternatives:
  - Piggybacking the state on the request's one round trip (the snapshot read) would add a
    read of the breaker's state to every request for ever, for an event (a channel failing)
    that is rare; and keys without a quota read their snapshot alone.
  - So each worker subscribes (Redis pub/sub, on a second connection: a subscribed connection
    takes no other command) to CHANNEL_HEALTH_EVENTS. The scripts that change a channel's
    place in the index (its first failure, opening, re-opening, closing) publish its id there;
    each worker then re-reads the index (one HGETALL of a hash holding only unhealthy
    channels) off the request. A message is only a hint: pub/sub is global to the Redis server
    (not per database) and at most once, so the index stays the truth.
  - As a safety net (a subscription that broke, a message lost during a reconnect), a worker
    that is serving requests re-reads the index at most once a second, in the background; the
    same tick sends this worker's per-minute request counts (the admin's error rate) and
    re-subscribes if the subscription is gone; counts not yet sent are sent within a second
    even if no request follows. An idle worker makes no call.
The worker that records a transition learns it from its script's reply, at once. A worker's
first forwarded request waits for its first read and subscription (`ready`), so a worker that
has just started does not try channels the others hold open.

Writes are one small Lua script, run only when a channel fails, when one that had failed
succeeds, and for the half-open trial (SET NX with an expiry: exactly one trial across every
worker and host). Every name is in core.keyspace, under one hash tag.

LocalStore (embedded, one process) keeps the same state in this process's memory
(LocalChannelHealth, one per process so the admin of that process reads it).
"""

import asyncio
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from core import keyspace

from ..redis_client import RedisClient, RedisError

logger = logging.getLogger("proxy.store")

REFRESH_SECONDS = 1.0
# The admin's error rate: requests sent to a channel over this many minutes.
ERROR_RATE_MINUTES = 15
# The most characters of a failure's reason kept (reasons are short: "status 503", "timeout").
REASON_MAX_LENGTH = 200


class Trial(Enum):
    SKIP = "skip"  # still cooling down, or another request holds the trial
    CLOSED = "closed"  # closed meanwhile: forward as usual
    TRIAL = "trial"  # this request is the one half-open trial


@dataclass(frozen=True, slots=True)
class Outcome:
    """A recorded failure's or success's effect: the transition it made ("open", "closed"),
    or None."""

    transition: str | None
    failures: int


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """A channel's health as the admin shows it."""

    state: str  # "closed", "open" or "half-open"
    failures: int  # in a row
    last_error: str
    last_error_at: datetime | None
    opened_at: datetime | None
    trial_running: bool
    # Requests sent to the channel in the last ERROR_RATE_MINUTES, and how many failed.
    sent: int
    failed: int

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.sent if self.sent else None


HEALTHY = ChannelHealth("closed", 0, "", None, None, False, 0, 0)


def _state(opened_ms: int, cooldown_seconds: float, now_ms: int) -> str:
    if not opened_ms:
        return "closed"
    return "open" if now_ms < opened_ms + cooldown_seconds * 1000 else "half-open"


def _moment(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _minute(now: float) -> int:
    return int(now) // 60 * 60


def _now_ms() -> int:
    return int(time.time() * 1000)


# KEYS: the channel's health hash, the index, its trial. ARGV: channel id, reason, failures to
# open, whether a failure re-opens an open channel (the trial's, or the try of a group whose
# channels are all open), the events channel, the hash's lifetime.
# Returns {failures in a row, opened_at ms (0: closed), 1 if this failure opened it}.
_FAILED = """
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[2], 'last_error_at', now)
local opened = redis.call('HGET', KEYS[1], 'opened_at') or '0'
local opens = 0
if opened ~= '0' then
  if ARGV[4] == '1' then opens = 1 end
elseif failures >= tonumber(ARGV[3]) then
  opens = 1
end
if opens == 1 then
  opened = now
  redis.call('HSET', KEYS[1], 'opened_at', opened)
  redis.call('DEL', KEYS[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
if redis.call('HGET', KEYS[2], ARGV[1]) ~= opened then
  redis.call('HSET', KEYS[2], ARGV[1], opened)
  redis.call('PUBLISH', ARGV[5], ARGV[1])
end
return {failures, tonumber(opened), opens}
"""

# KEYS: the channel's health hash, the index, its trial. ARGV: channel id, the events channel.
# Closes the channel and forgets its failures. Returns 1 if it was open.
_SUCCEEDED = """
local opened = redis.call('HGET', KEYS[1], 'opened_at') or '0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'failures', 0, 'opened_at', 0)
end
redis.call('DEL', KEYS[3])
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[1])
end
if opened ~= '0' then return 1 end
return 0
"""

# KEYS: the channel's health hash, its trial. ARGV: cool-down ms, the trial's lease ms.
# Returns 0: skip it (cooling down, or another request holds the trial); 1: closed
# meanwhile; 2: this request is the trial.
_TRIAL = """
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
if opened == 0 then return 1 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < opened + tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""


class _Tally:
    """Requests sent to each channel and how many failed, per minute, counted in this worker
    (a dict increment per request) until sent."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])

    def count(self, channel_id: int, failed: bool) -> None:
        counted = self.counts[channel_id, _minute(time.time())]
        counted[0] += 1
        if failed:
            counted[1] += 1

    def take(self) -> dict[tuple[int, int], list[int]]:
        counts, self.counts = self.counts, defaultdict(lambda: [0, 0])
        return counts


class RedisChannelHealth:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._failed = redis.script(_FAILED)
        self._succeeded = redis.script(_SUCCEEDED)
        self._trial = redis.script(_TRIAL)
        # channel id -> opened_at ms (0: closed with failures in a row)
        self._view: dict[int, int] = {}
        self._tally = _Tally()
        self._refreshed_at = float("-inf")
        self._tick_task: asyncio.Task | None = None
        # A message came while a refresh was running: refresh again after it.
        self._stale = False
        self._subscription = None
        self._send_pending = False
        self._closed = False
        self._loaded = False

    async def ready(self) -> None:
        """A worker's first forwarded request waits for its first read of the index (and its
        subscription), so a new worker does not try channels the others hold open; then this
        returns at once."""
        if self._loaded:
            return
        if self._tick_task is None:
            self._refreshed_at = time.monotonic()
            self._tick_task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.shield(self._tick_task)

    def view(self) -> dict[int, int]:
        self._tick_if_due()
        return self._view

    def count(self, channel_id: int, failed: bool) -> None:
        self._tally.count(channel_id, failed)
        if not self._send_pending:
            # Sent within a second even if no request follows (the admin's error rate).
            self._send_pending = True
            asyncio.get_running_loop().call_later(REFRESH_SECONDS, self._send_later)

    async def trial(self, channel_id: int, *, cooldown_seconds: float, lease_seconds: float):
        reply = await self._trial(
            keys=[keyspace.channel_health(channel_id), keyspace.channel_trial(channel_id)],
            args=[int(cooldown_seconds * 1000), max(1, int(lease_seconds * 1000))],
        )
        if reply == 1:
            self._view.pop(channel_id, None)
            return Trial.CLOSED
        return Trial.TRIAL if reply == 2 else Trial.SKIP

    async def failed(
        self, channel_id: int, reason: str, *, failures_to_open: int, reopen: bool
    ) -> Outcome:
        failures, opened, opens = await self._failed(
            keys=self._keys(channel_id),
            args=[
                channel_id,
                reason[:REASON_MAX_LENGTH],
                failures_to_open,
                int(reopen),
                keyspace.CHANNEL_HEALTH_EVENTS,
                keyspace.CHANNEL_HEALTH_SECONDS,
            ],
        )
        self._view[channel_id] = int(opened)
        return Outcome("open" if opens else None, int(failures))

    async def succeeded(self, channel_id: int) -> Outcome:
        was_open = await self._succeeded(
            keys=self._keys(channel_id), args=[channel_id, keyspace.CHANNEL_HEALTH_EVENTS]
        )
        self._view.pop(channel_id, None)
        return Outcome("closed" if was_open else None, 0)

    @staticmethod
    def _keys(channel_id: int) -> list[str]:
        return [
            keyspace.channel_health(channel_id),
            keyspace.CHANNEL_HEALTH_INDEX,
            keyspace.channel_trial(channel_id),
        ]

    # --- off the request path ---------------------------------------------------------------

    def _tick_if_due(self) -> None:
        if self._tick_task is None and time.monotonic() - self._refreshed_at >= REFRESH_SECONDS:
            self._refreshed_at = time.monotonic()
            self._tick_task = asyncio.get_running_loop().create_task(self._tick())

    def _send_later(self) -> None:
        if self._closed:
            return
        if self._tick_task is not None:  # a tick is running: try again after it
            asyncio.get_running_loop().call_later(REFRESH_SECONDS, self._send_later)
            return
        self._send_pending = False
        self._refreshed_at = time.monotonic()
        self._tick_task = asyncio.get_running_loop().create_task(self._tick())

    def _on_message(self, _: bytes) -> None:
        if self._tick_task is None:
            self._tick_task = asyncio.get_running_loop().create_task(self._refresh_only())
        else:
            self._stale = True

    async def _tick(self) -> None:
        try:
            if self._subscription is None or self._subscription.lost:
                self._subscription = await self.redis.subscribe(
                    keyspace.CHANNEL_HEALTH_EVENTS, self._on_message
                )
            await self._send_tally()
            await self._refresh()
        except RedisError as error:
            logger.warning("Could not refresh the channels' health (%s)", error)
        finally:
            # Tried once: later requests do not wait for Redis again (the refresh goes on in
            # the background).
            self._loaded = True
            self._tick_task = None

    async def _refresh_only(self) -> None:
        try:
            await self._refresh()
        except RedisError as error:
            logger.warning("Could not refresh the channels' health (%s)", error)
        finally:
            self._tick_task = None

    async def _refresh(self) -> None:
        while True:
            self._stale = False
            reply = await self.redis.execute("HGETALL", keyspace.CHANNEL_HEALTH_INDEX)
            self._view = {int(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}
            self._refreshed_at = time.monotonic()
            if not self._stale:
                return

    async def _send_tally(self) -> None:
        counts = self._tally.take()
        if not counts:
            return
        commands = []
        for (channel_id, minute), (sent, failed) in counts.items():
            name = keyspace.channel_tally(channel_id, minute)
            commands.append(("HINCRBY", name, "s", sent))
            if failed:
                commands.append(("HINCRBY", name, "f", failed))
            commands.append(("EXPIRE", name, keyspace.CHANNEL_TALLY_SECONDS))
        await self.redis.execute_together(*commands)

    async def close(self) -> None:
        self._closed = True
        if self._tick_task is not None:
            self._tick_task.cancel()
            self._tick_task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None


def read_redis(client, channel_ids: list[int], *, cooldown_seconds: float) -> dict:
    """Each channel's ChannelHealth from Redis, with redis-py's (sync) client `client`: one
    pipeline for all of them (the admin's selector)."""
    now = time.time()
    minutes = [_minute(now) - 60 * n for n in range(ERROR_RATE_MINUTES)]
    pipe = client.pipeline(transaction=False)
    for channel_id in channel_ids:
        pipe.hgetall(keyspace.channel_health(channel_id))
        pipe.exists(keyspace.channel_trial(channel_id))
        for minute in minutes:
            pipe.hmget(keyspace.channel_tally(channel_id, minute), "s", "f")
    replies = pipe.execute()
    found = {}
    per_channel = 2 + len(minutes)
    for index, channel_id in enumerate(channel_ids):
        health, trial, *tallies = replies[index * per_channel : (index + 1) * per_channel]
        health = {key.decode(): value.decode() for key, value in health.items()}
        opened = int(health.get("opened_at") or 0)
        found[channel_id] = ChannelHealth(
            state=_state(opened, cooldown_seconds, int(now * 1000)),
            failures=int(health.get("failures") or 0),
            last_error=health.get("last_error", ""),
            last_error_at=_moment(int(health.get("last_error_at") or 0)),
            opened_at=_moment(opened),
            trial_running=bool(trial),
            sent=sum(int(sent or 0) for sent, _ in tallies),
            failed=sum(int(failed or 0) for _, failed in tallies),
        )
    return found


@dataclass
class _LocalChannel:
    failures: int = 0
    opened_at: int = 0
    last_error: str = ""
    last_error_at: int = 0
    # When the half-open trial's lease ends (ms), 0 for none.
    trial_until: int = 0


class LocalChannelHealth:
    """As RedisChannelHealth, in this one process's memory (the embedded default). Under a lock:
    the admin reads it from Django's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[int, _LocalChannel] = {}
        self._view: dict[int, int] = {}
        # (channel id, minute) -> [sent, failed], the last ERROR_RATE_MINUTES only
        self._tallies: dict[tuple[int, int], list[int]] = {}
        self._pruned_minute = 0

    async def ready(self) -> None:
        pass

    def view(self) -> dict[int, int]:
        return self._view

    def count(self, channel_id: int, failed: bool) -> None:
        minute = _minute(time.time())
        with self._lock:
            if minute != self._pruned_minute:
                self._prune(minute)
            counted = self._tallies.setdefault((channel_id, minute), [0, 0])
            counted[0] += 1
            counted[1] += int(failed)

    def _prune(self, minute: int) -> None:
        self._pruned_minute = minute
        first = minute - 60 * (ERROR_RATE_MINUTES - 1)
        for key in [key for key in self._tallies if key[1] < first]:
            del self._tallies[key]

    async def trial(self, channel_id: int, *, cooldown_seconds: float, lease_seconds: float):
        now = _now_ms()
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None or not channel.opened_at:
                self._view.pop(channel_id, None)
                return Trial.CLOSED
            if now < channel.opened_at + cooldown_seconds * 1000 or channel.trial_until > now:
                return Trial.SKIP
            channel.trial_until = now + max(1, int(lease_seconds * 1000))
            return Trial.TRIAL

    async def failed(
        self, channel_id: int, reason: str, *, failures_to_open: int, reopen: bool
    ) -> Outcome:
        now = _now_ms()
        with self._lock:
            channel = self._channels.setdefault(channel_id, _LocalChannel())
            channel.failures += 1
            channel.last_error = reason[:REASON_MAX_LENGTH]
            channel.last_error_at = now
            opens = reopen if channel.opened_at else channel.failures >= failures_to_open
            if opens:
                channel.opened_at = now
                channel.trial_until = 0
            self._view = {**self._view, channel_id: channel.opened_at}
            return Outcome("open" if opens else None, channel.failures)

    async def succeeded(self, channel_id: int) -> Outcome:
        with self._lock:
            channel = self._channels.get(channel_id)
            was_open = bool(channel and channel.opened_at)
            if channel is not None:
                channel.failures = channel.opened_at = channel.trial_until = 0
            self._view = {key: value for key, value in self._view.items() if key != channel_id}
            return Outcome("closed" if was_open else None, 0)

    def read(self, channel_ids: list[int], *, cooldown_seconds: float) -> dict:
        """Each channel's ChannelHealth (the admin's selector)."""
        now = time.time()
        with self._lock:
            self._prune(_minute(now))
            found = {}
            for channel_id in channel_ids:
                channel = self._channels.get(channel_id, _LocalChannel())
                recent = [
                    counts
                    for (counted, _), counts in self._tallies.items()
                    if counted == channel_id
                ]
                found[channel_id] = ChannelHealth(
                    state=_state(channel.opened_at, cooldown_seconds, int(now * 1000)),
                    failures=channel.failures,
                    last_error=channel.last_error,
                    last_error_at=_moment(channel.last_error_at),
                    opened_at=_moment(channel.opened_at),
                    trial_running=channel.trial_until > now * 1000,
                    sent=sum(sent for sent, _ in recent),
                    failed=sum(failed for _, failed in recent),
                )
            return found

    def reset(self) -> None:
        """Forget every channel's state (tests)."""
        with self._lock:
            self._channels.clear()
            self._view = {}
            self._tallies.clear()

    async def close(self) -> None:
        pass


# The embedded relay's one state, in this process: LocalStore uses it, the admin reads it.
local_channel_health = LocalChannelHealth()
