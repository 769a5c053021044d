"""The relay's metrics (see core.metrics): counted on the request path in plain dicts, and moved
into prometheus_client's metrics once a second by a background task (and when the worker
stops). Counting a request is a few dict increments; prometheus_client's own calls cost 1.4 to
3 us each in multiprocess mode (a lock and a write to a memory-mapped file), five or six per
request, which the relay's budget does not have.
"""

import asyncio
import bisect
import logging
from collections import defaultdict

from prometheus_client import Counter, Histogram

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0

# Seconds: the relay's own share of a request is well under a millisecond; an upstream's first
# byte takes from tens of milliseconds to a minute.
ADDED_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "hcai_relay_requests",
    "Relay requests answered, by endpoint, status class and refusal code (empty when served).",
    ["endpoint", "status_class", "reason"],
)
ADDED = Histogram(
    "hcai_relay_added_seconds",
    "Time from a request's arrival until it was sent upstream: the relay's gate.",
    ["endpoint"],
    buckets=ADDED_BUCKETS,
)
FIRST_BYTE = Histogram(
    "hcai_relay_first_byte_seconds",
    "Time from a request's arrival until the first byte of its answer was sent.",
    ["endpoint"],
    buckets=UPSTREAM_BUCKETS,
)
UPSTREAM = Counter(
    "hcai_upstream_requests",
    "Requests sent to upstream channels, by channel and outcome (the status class, or the "
    "failure: timeout, connection error).",
    ["channel", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "hcai_upstream_seconds",
    "Time until an upstream channel answered (its response headers), by channel.",
    ["channel"],
    buckets=UPSTREAM_BUCKETS,
)
FAILOVERS = Counter(
    "hcai_relay_failovers",
    "Requests moved on to a group's next channel, by the channel that failed.",
    ["channel"],
)
BREAKER = Counter(
    "hcai_channel_breaker_transitions",
    "Channels' circuit breaker transitions (proxy.breaker), by channel and the state entered: "
    "open, half_open (a trial let through), closed.",
    ["channel", "state"],
)
KEY_STATE = Counter(
    "hcai_key_state_lookups",
    "Key snapshots looked up, by result: hit (in the cache) or miss (built from the database).",
    ["result"],
)


class _Histogram:
    """One label set's observations, counted per bucket until flushed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


def add_observations(histogram, counts: list[int], total: float) -> None:
    """Add per-bucket counts to a prometheus_client histogram child, as `observe` would one
    value at a time (prometheus_client keeps non-cumulative buckets and a sum; pinned, and
    tests/proxy/test_metrics.py holds the two equal)."""
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class RelayMetrics:
    def __init__(self) -> None:
        self._reset()
        self._task: asyncio.Task | None = None

    def _reset(self) -> None:
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.added: dict[str, _Histogram] = {}
        self.first_byte: dict[str, _Histogram] = {}
        self.upstream: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.upstream_seconds: dict[str, _Histogram] = {}
        self.failovers: defaultdict[str, int] = defaultdict(int)
        self.breaker: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.key_state: defaultdict[str, int] = defaultdict(int)

    # --- counted on the request path ------------------------------------------------------

    def request(self, endpoint: str, status: int, reason: str) -> None:
        self.requests[(endpoint, f"{status // 100}xx", reason)] += 1
        self._started()

    def added_latency(self, endpoint: str, seconds: float) -> None:
        _histogram(self.added, endpoint, ADDED_BUCKETS).observe(seconds)

    def first_byte_latency(self, endpoint: str, seconds: float) -> None:
        _histogram(self.first_byte, endpoint, UPSTREAM_BUCKETS).observe(seconds)

    def upstream_answer(self, channel: str, outcome: str, seconds: float | None) -> None:
        self.upstream[(channel, outcome)] += 1
        if seconds is not None:
            _histogram(self.upstream_seconds, channel, UPSTREAM_BUCKETS).observe(seconds)

    def failover(self, channel: str) -> None:
        self.failovers[channel] += 1

    def breaker_transition(self, channel: str, state: str) -> None:
        self.breaker[(channel, state)] += 1
        self._started()

    def key_state_lookup(self, hit: bool) -> None:
        self.key_state["hit" if hit else "miss"] += 1

    # --- moved into prometheus_client ------------------------------------------------------

    def flush(self) -> None:
        requests, added, first_byte = self.requests, self.added, self.first_byte
        upstream, upstream_seconds = self.upstream, self.upstream_seconds
        failovers, key_state, breaker = self.failovers, self.key_state, self.breaker
        self._reset()
        for labels, count in requests.items():
            REQUESTS.labels(*labels).inc(count)
        for histogram, values in ((ADDED, added), (FIRST_BYTE, first_byte)):
            for endpoint, counted in values.items():
                add_observations(histogram.labels(endpoint), counted.counts, counted.total)
        for labels, count in upstream.items():
            UPSTREAM.labels(*labels).inc(count)
        for channel, counted in upstream_seconds.items():
            add_observations(UPSTREAM_SECONDS.labels(channel), counted.counts, counted.total)
        for channel, count in failovers.items():
            FAILOVERS.labels(channel).inc(count)
        for result, count in key_state.items():
            KEY_STATE.labels(result).inc(count)
        for labels, count in breaker.items():
            BREAKER.labels(*labels).inc(count)

    def _started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_every_second())

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:
                logger.exception("Could not flush the relay's metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.flush()


def _histogram(histograms: dict[str, _Histogram], label: str, bounds) -> _Histogram:
    found = histograms.get(label)
    if found is None:
        found = histograms[label] = _Histogram(bounds)
    return found


# One per process, shared by the relay's app and its parts.
relay_metrics = RelayMetrics()
