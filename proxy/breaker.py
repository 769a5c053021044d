"""The channels' circuit breaker: which of a group's channels a request tries, in order.

A channel that fails CHANNEL_FAILURES_TO_OPEN times in a row (no connection, a timeout before
its answer's headers, a 5xx) opens: requests skip it, going to the group's next channel, for
CHANNEL_COOLDOWN_SECONDS. Then it is half-open: exactly one request, across every worker and
host, tries it (the trial, held by a SET NX with an expiry of the channel's timeout, so a
trial whose worker died is retried). The trial's success closes the channel; its failure opens
it again for another cool-down. Any success of a channel closes it and forgets its failures.

Failures are counted where failover happens, before the first byte: a stream that breaks off
later was answered, and what it has sent cannot be taken back.

Every channel of the group open: the request tries the least recently opened one anyway (its
cool-down ends soonest, so it is the likeliest to have recovered), as if it were a trial
whose failure opens it again, so the next such request tries another channel. Refusing
outright would turn an upstream's bad minute into a certain failure for every client for the
whole cool-down, while trying costs the client only the wait a refusal would have saved, and
clients retry anyway; when a group has a healthy channel, open ones are still skipped.

The state is shared (proxy.store.channel_health: Redis, or this process's memory embedded);
each worker reads its view of the unhealthy channels from memory, so a request whose channels
are healthy makes no call for the breaker. A failure, a success after failures and a trial
each cost one small script. If the breaker's state cannot be reached, the channel is tried:
the breaker never refuses a request on its own account.
"""

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from .keystate import ChannelState
from .metrics import relay_metrics
from .redis_client import RedisError
from .store import ChannelHealthState
from .store.channel_health import Outcome, Trial
from .upstream import UpstreamFailure

logger = logging.getLogger("proxy")

# The trial's lease outlives the channel's timeout by this much: by then it has an answer.
_LEASE_MARGIN_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Attempt:
    channel: ChannelState
    # A failure opens the channel again for a new cool-down (the half-open trial, or the try
    # of a group whose channels are all open).
    reopen: bool = False


class Attempts:
    """One request's way through its group's channels: `next()` until None, reporting each
    attempt's outcome with `failed` or `succeeded`."""

    def __init__(self, health: ChannelHealthState, channels: list[ChannelState]) -> None:
        self.health = health
        self.channels = channels
        self.position = 0
        self.tried = 0
        # (when it opened, channel) of the channels skipped as open
        self.skipped: list[tuple[int, ChannelState]] = []
        # The channel this request holds the half-open trial of.
        self._trial: ChannelState | None = None
        view = health.view()
        self.healthy = not view or not any(channel.id in view for channel in channels)

    def more(self) -> bool:
        """Whether a channel is left after the current one."""
        return self.position < len(self.channels)

    async def next(self) -> Attempt | None:
        while self.position < len(self.channels):
            channel = self.channels[self.position]
            self.position += 1
            if self.healthy or await self._admits(channel):
                self.tried += 1
                return Attempt(channel, reopen=self._trial is channel)
        if not self.tried and self.skipped:
            self.tried += 1
            _, channel = min(self.skipped, key=lambda skipped: skipped[0])
            self.skipped = []
            logger.warning(
                "Every channel of the request's group is open; trying %s anyway", channel.name
            )
            return Attempt(channel, reopen=True)
        return None

    async def _admits(self, channel: ChannelState) -> bool:
        opened = self.health.view().get(channel.id, 0)
        if not opened:
            return True
        cooldown = settings.CHANNEL_COOLDOWN_SECONDS
        if time.time() * 1000 < opened + cooldown * 1000:
            self.skipped.append((opened, channel))
            return False
        try:
            trial = await self.health.trial(
                channel.id,
                cooldown_seconds=cooldown,
                lease_seconds=channel.timeout_seconds + _LEASE_MARGIN_SECONDS,
            )
        except RedisError as error:
            logger.warning("Channel %s's breaker unavailable (%s); trying it", channel.name, error)
            return True
        if trial is Trial.SKIP:
            self.skipped.append((opened, channel))
            return False
        if trial is Trial.TRIAL:
            self._trial = channel
            relay_metrics.breaker_transition(channel.name, "half_open")
            logger.info("Channel %s half-open: this request is its trial", channel.name)
        return True

    async def failed(self, attempt: Attempt, error: UpstreamFailure) -> None:
        channel = attempt.channel
        if not error.upstream_fault:
            return  # never sent upstream: not the channel's health, nor in its error rate
        self.health.count(channel.id, True)
        try:
            outcome = await self.health.failed(
                channel.id,
                error.reason,
                failures_to_open=settings.CHANNEL_FAILURES_TO_OPEN,
                reopen=attempt.reopen,
            )
        except RedisError as warning:
            logger.warning("Could not record channel %s's failure (%s)", channel.name, warning)
            return
        _transition(channel, outcome)

    async def succeeded(self, attempt: Attempt) -> None:
        channel = attempt.channel
        self.health.count(channel.id, False)
        if channel.id not in self.health.view() and not attempt.reopen:
            return
        try:
            outcome = await self.health.succeeded(channel.id)
        except RedisError as error:
            logger.warning("Could not record channel %s's success (%s)", channel.name, error)
            return
        _transition(channel, outcome)


def _transition(channel: ChannelState, outcome: Outcome) -> None:
    if outcome.transition is None:
        return
    relay_metrics.breaker_transition(channel.name, outcome.transition)
    if outcome.transition == "open":
        logger.warning(
            "Channel %s open after %d failure(s) in a row: skipped for %g s",
            channel.name,
            outcome.failures,
            settings.CHANNEL_COOLDOWN_SECONDS,
        )
    else:
        logger.info("Channel %s closed: it answered again", channel.name)
