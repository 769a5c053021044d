"""The relay's names in Redis, in one place: what each holds, who writes it, who reads it.

Here, below every app, because the services (keys), the ledger and the usage writers (billing)
and the relay (proxy) all address the same keys. Every name starts with PREFIX, the prefix
Django's Redis cache gives its keys (KEY_PREFIX "hcai", version 1: make_key writes
"prefix:version:key"), so a snapshot addressed through Django's cache API is the relay's.

Hash tags (Redis Cluster). A Cluster serves a script or a multi-key command only if all its
keys are in one hash slot, and a name's slot is that of its hash tag (the part between its
first "{" and the next "}") when it has one. So every name a script touches together carries
one tag:
  - a team's names (its keys' lifetime and window totals, reservations and rate logs, its
    members' and its own) carry its shard's tag, `{t<team id % SHARDS>}`, right after PREFIX:
    team 70's key 42's total is "hcai:1:{t6}:spend:42". An admission (its key, its owner, its
    team), a record and a release touch only the team's names. Teams share SHARDS (64) tags
    rather than one tag each so that the usage is in 64 streams, not one per team: ingest must
    read every stream, and a Cluster spreads 64 slots over its primaries as well as thousands.
    SHARDS is a constant: changing it would move every name.
  - the usage stream and the checkpoints are one per shard, in its tag, so the record script
    (stream, checkpoints, totals, reservations) and the reaper's (checkpoints, stream, the
    checkpoints' totals and reservations) each touch one slot; ingest, the reaper and the
    metrics read every shard's (INGESTED_STREAMS), one command per stream.
  - a relay worker's liveness, which the admission (dropping a dead worker's holds) and the
    reaper read inside their scripts from a prefix, is kept in every shard: the worker renews
    64 names every RELAY_ALIVE_SECONDS / 5 in one pipelined write, off the requests' path (64
    SETs a worker every 2 s, against the thousands of commands its requests send). A liveness
    per team would need a write per team; one global name would be in another slot than the
    holds it vouches for.
  - a minute's refusal counts and the minutes' index share `{refusals}` (the count script
    names the minute from Redis's clock, so that name is not a declared key: it is in the
    declared index's slot by its tag); the channel-health names share `{channel-health}`.
  - a snapshot and its generation carry the digest as their tag ("keystate:{<digest>}"):
    _PUT_IF_CURRENT reads one and writes the other; snapshots of different keys spread.
Names no script combines with another (the unwritable stream, the task outcomes) need no tag.
On a single Redis the tags are only characters of a name: everything works as without them.
The tests of the relay and billing check, with Redis, that every script and multi-key command
they send touches one slot (tests/redis_slots.py).

The deploy that brought the tags. A running release's stream and checkpoints hold usage not yet
in the database and must never be orphaned, so for one release the names before the tags
(LEGACY_*) are still read: ingest drains the old stream through the consumer group as that
release did (entries it had taken and not acknowledged are claimed), the reaper bills the old
checkpoints (raising the totals under their new names: `retagged`), a rebuild also counts the
old stream's entries, the collector collects the old refusal counts, the services drop the
old snapshot names beside the new, and a spooled line of the earlier release is recorded under
the new names. Each reads a legacy name on its own, and the scripts over two of them (reaper,
collector) run only when the old hash or index exists, which only a Redis that ran the earlier
release has, never a Cluster. The running totals and reservations under the old names are left
to expire: the new ones are rebuilt from the database and the streams (old and new) by the
first admission that misses them. A request of the previous release recorded, during a rolling
deploy, after a new window total was rebuilt is missed by that window total (the lifetime
totals are reconciled by ingest): stop the old relay workers before starting the new ones to
avoid it.

Name (PREFIX + ...; T: the team's tag {t<team id % 64>}, S: a shard's)
                          Type    TTL                       Written by              Read by
keystate:{<digest>}       string  KEY_STATE_SECONDS (1 h)   relay (if current);     relay
                                                            services delete it
keystate-gen:{<digest>}   int     GENERATION_SECONDS (1 d)  services (INCR)         relay
T:spend:<key id>          int     SPEND_TOTAL_SECONDS (1 d) ledger (rebuild: SET    relay, ledger
                                  from its rebuild          NX; reconcile), relay
                                                            and reap (INCRBY)
T:spend-reserved:<key id> hash    the longest hold          relay (admission,       relay
                          (hold id ->                       release, record), reap
                          "units:deadline[:worker id]", and HOLDS_SUM -> the holds' units)
T:spend-window:<scope>:<owner>:<d|w|m>:<start>              ledger (rebuild),       relay, billing
                          int     until 1 h after the       relay and reap          selectors
                                  window ends               (INCRBY)
                          (scope key: owner the key id; member: "team id:user id"; team: the
                          team id; start: the window's start, epoch seconds: billing.windows)
T:spend-reserved:member:<team id>:<user id>, T:spend-reserved:team:<team id>
                          hash    as the key's              as the key's            relay
T:rate:<key id>           zset    the rate's period         relay (admission)       relay
                          (the key's admitted requests in the last period: hold id -> ms)
S:usage:stream            stream  none                      relay (record), reap    ingest, rebuild
                          (field e: UsageRecord JSON; read by every ingesting worker through
                          the consumer group USAGE_INGEST_GROUP, trimmed once acknowledged)
S:usage:checkpoints       hash    none                      relay (checkpoint,      reap
                          (hold id -> {w, k, c, e} JSON)    record)
S:relay:alive:<worker id> string  RELAY_ALIVE_SECONDS       relay worker (in every  admission,
                                                            shard)                  reap
usage:unwritable          stream  none (newest 10,000)      ingest                  staff (XRANGE)
{refusals}:<minute>       hash    REFUSAL_COUNT_SECONDS     relay (HINCRBY),        refusal
                                  (1 d)                     collector (DEL)         collector
                          ("key|status|code|endpoint" -> count; minute: its start, epoch seconds)
{refusals}:minutes        set     REFUSAL_COUNT_SECONDS     relay (SADD),           refusal
                          (the minutes counted)             collector (SREM)        collector
metrics:task-outcomes     hash    none                      Celery workers          /metrics
                          ("task|outcome" -> count: core.metrics)
{channel-health}:<channel id>                               relay (a failure, or a  relay, admin
                          hash    CHANNEL_HEALTH_SECONDS    success after one)      (selector)
                          (failures: consecutive; opened_at: ms, 0 when closed; last_error: the
                          failure's reason, never a URL; last_error_at: ms)
{channel-health}:index    hash    none                      relay (as above)        relay (each
                          (channel id -> opened_at ms, "0" while closed with    worker's view)
                          failures; only channels with failures or open are in it)
{channel-health}:trial:<channel id>                         relay (SET NX: the one  relay, admin
                          string  the channel's timeout     half-open trial)
{channel-health}:tally:<channel id>:<minute>                relay (each worker,     admin
                          hash    CHANNEL_TALLY_SECONDS     once a second)          (selector)
                          (s: requests sent to the channel, f: of them failed; minute: its start)
Pub/sub channel {channel-health}:events: a channel id, published when it enters or leaves the
index or opens again (proxy.store.channel_health); a hint, the index stays the truth.
Read for one release, never written by this one (see above): usage:stream,
usage:checkpoints, relay:alive:<worker id> (in the old reap), refusal-minutes,
refusals:<minute>; keystate:<digest> and keystate-gen:<digest> (dropped by the services).

Integers are stored as Redis stores them (decimal strings), written and read with the raw
Redis client only (billing.ledger.RedisTotals for the totals), so Lua's INCRBY and GET work on
them and nothing depends on how Django's cache would serialize a value. Embedded, the
local-memory cache holds the totals under the same names (billing.ledger.LocalTotals).
Snapshots and generations are also addressed through Django's cache API (the embedded
default's local-memory cache, the tests) by their cache key (`snapshot_cache_key`,
`generation_cache_key`); in Redis that key with PREFIX, the name Django's Redis cache gives
it (tests/core/test_keyspace.py holds the two together).

Not the relay's, in the same Redis database: django-ratelimit's counters (the sign-in's and
the REST API's rate limits, through Django's cache API, named by that library), Celery's broker
queues (kombu's names) and /readyz's probe.
"""

PREFIX = "hcai:1:"

# The hash tags a team's names are spread over (see the docstring). A constant, never a
# setting: changing it would move every team's names (and strand its usage stream).
SHARDS = 64


def shard(team_id: int) -> int:
    """The shard whose hash tag a team's names carry."""
    return team_id % SHARDS


def _shard_prefix(number: int) -> str:
    return f"{PREFIX}{{t{number}}}:"


# Every shard's names start with one of these (index: the shard).
SHARD_PREFIXES = tuple(_shard_prefix(number) for number in range(SHARDS))


def team_prefix(team_id: int) -> str:
    """What every name of the team's starts with: PREFIX and the team's hash tag."""
    return SHARD_PREFIXES[team_id % SHARDS]


def usage_stream(number: int) -> str:
    """A shard's usage stream: the usage of its teams' requests."""
    return SHARD_PREFIXES[number] + "usage:stream"


def checkpoints(number: int) -> str:
    """A shard's checkpoints: its teams' long streams in progress."""
    return SHARD_PREFIXES[number] + "usage:checkpoints"


def relay_alive_prefix(number: int) -> str:
    """The prefix of the relay workers' liveness names in a shard (+ the worker's id)."""
    return SHARD_PREFIXES[number] + "relay:alive:"


USAGE_STREAMS = tuple(usage_stream(number) for number in range(SHARDS))
CHECKPOINT_HASHES = tuple(checkpoints(number) for number in range(SHARDS))
UNWRITABLE_STREAM = PREFIX + "usage:unwritable"
# The consumer group every ingesting worker reads the usage streams through.
USAGE_INGEST_GROUP = "ingest"
# Celery task outcomes counted for /metrics (core.metrics): "task|outcome" -> count.
TASK_OUTCOMES = PREFIX + "metrics:task-outcomes"

# The refusal counts: the minutes' index and each minute's counts share one hash tag.
REFUSALS_PREFIX = PREFIX + "{refusals}:"
REFUSAL_MINUTES = REFUSALS_PREFIX + "minutes"

# The names of the releases before the hash tags, still read for one release (see the
# docstring): what a running release left in them is drained, never orphaned.
LEGACY_USAGE_STREAM = PREFIX + "usage:stream"
LEGACY_CHECKPOINTS = PREFIX + "usage:checkpoints"
LEGACY_RELAY_ALIVE_PREFIX = PREFIX + "relay:alive:"
LEGACY_SPEND_TOTAL_PREFIX = PREFIX + "spend:"
LEGACY_RESERVATIONS_PREFIX = PREFIX + "spend-reserved:"
LEGACY_REFUSAL_MINUTES = PREFIX + "refusal-minutes"
LEGACY_REFUSALS_PREFIX = PREFIX + "refusals:"
# Every stream ingest reads: the shards', then the one before the hash tags.
INGESTED_STREAMS = (*USAGE_STREAMS, LEGACY_USAGE_STREAM)

# The circuit breaker's state per channel (proxy.store.channel_health).
CHANNEL_HEALTH_PREFIX = PREFIX + "{channel-health}:"
CHANNEL_HEALTH_INDEX = CHANNEL_HEALTH_PREFIX + "index"
CHANNEL_HEALTH_EVENTS = CHANNEL_HEALTH_PREFIX + "events"
# A channel's health hash outlives its last failure by this much (then it reads as healthy).
CHANNEL_HEALTH_SECONDS = 7 * 24 * 60 * 60
# Requests sent to a channel are counted per minute, kept this long for the admin's error rate.
CHANNEL_TALLY_SECONDS = 20 * 60

# How long a minute's refusal counts wait in Redis for the collector (billing.refusals): long
# enough for a collector that is down for a while to find them.
REFUSAL_COUNT_SECONDS = 24 * 60 * 60


# The field of a reservation hash that keeps the sum of its holds' units, so an admission
# reads it rather than every hold; every script that takes a hold away does it with `unhold`
# (HOLDS_LUA), which keeps the sum. A hash without it (empty, or written by an earlier
# release) is summed by the next admission.
HOLDS_SUM = "=sum"
HOLDS_LUA = f"""
local SUM = '{HOLDS_SUM}'
local function unhold(name, hold)
  local found = redis.call('HMGET', name, hold, SUM)
  if not found[1] then return end
  redis.call('HDEL', name, hold)
  if not found[2] then return end  -- No sum kept: the next admission sums the hash.
  local amount = tonumber(string.match(found[1], '^(%d+)'))
  if tonumber(found[2]) <= amount and redis.call('HLEN', name) == 1 then
    redis.call('DEL', name)  -- The last hold: nothing left to sum.
  else
    redis.call('HINCRBY', name, SUM, -amount)
  end
end
"""


def spend_total(team_id: int, key_id: int) -> str:
    """A key's lifetime running total."""
    return f"{team_prefix(team_id)}spend:{key_id}"


def reservations(team_id: int, key_id: int) -> str:
    return f"{team_prefix(team_id)}spend-reserved:{key_id}"


def spend_window(team_id: int, scope: str, owner: int | str, letter: str, start: int) -> str:
    """A window's running total (billing.windows.Counter)."""
    return f"{team_prefix(team_id)}spend-window:{scope}:{owner}:{letter}:{start}"


def member_reservations(team_id: int, user_id: int) -> str:
    return f"{team_prefix(team_id)}spend-reserved:member:{team_id}:{user_id}"


def team_reservations(team_id: int) -> str:
    return f"{team_prefix(team_id)}spend-reserved:team:{team_id}"


def rate(team_id: int, key_id: int) -> str:
    return f"{team_prefix(team_id)}rate:{key_id}"


def refusals(minute: int) -> str:
    """A minute's refusal counts; `minute` is its start in seconds since the epoch."""
    return f"{REFUSALS_PREFIX}{minute}"


def relay_alive(number: int, worker_id: str) -> str:
    """A relay worker's liveness in a shard."""
    return relay_alive_prefix(number) + worker_id


def snapshot_cache_key(digest: str) -> str:
    # The digest is the hash tag: the snapshot and its generation share a slot
    # (proxy.store.redis's _PUT_IF_CURRENT reads one and writes the other).
    return f"keystate:{{{digest}}}"


def generation_cache_key(digest: str) -> str:
    return f"keystate-gen:{{{digest}}}"


def snapshot(digest: str) -> str:
    return PREFIX + snapshot_cache_key(digest)


def generation(digest: str) -> str:
    return PREFIX + generation_cache_key(digest)


def untagged(name: str) -> bool:
    """Whether a name is one of the releases before the hash tags (PREFIX + the rest)."""
    return name.startswith(PREFIX) and not name.startswith(PREFIX + "{")


def retagged(team_id: int, name: str) -> str:
    """A running total's or reservation's name as the releases before the hash tags spelled
    it, as this release spells it (the team's tag, then the same rest); any other as it is."""
    return team_prefix(team_id) + name[len(PREFIX) :] if untagged(name) else name


def legacy_snapshot(digest: str) -> str:
    """The snapshot's name before the hash tags: a relay of the previous release still
    running during a deploy reads it (keys.cache drops it too)."""
    return f"{PREFIX}keystate:{digest}"


def legacy_generation(digest: str) -> str:
    return f"{PREFIX}keystate-gen:{digest}"


def channel_health(channel_id: int) -> str:
    return f"{CHANNEL_HEALTH_PREFIX}{channel_id}"


def channel_trial(channel_id: int) -> str:
    return f"{CHANNEL_HEALTH_PREFIX}trial:{channel_id}"


def channel_tally(channel_id: int, minute: int) -> str:
    """Requests sent to a channel in a minute; `minute` is its start in seconds since the
    epoch."""
    return f"{CHANNEL_HEALTH_PREFIX}tally:{channel_id}:{minute}"
