"""Intuit's per-realm limits, kept across every process and machine of the site.

Intuit allows each realm (per app) 10 requests in flight and 500 a minute,
and 120 a minute to its Batch endpoint. :func:`within_limits` holds one API
request inside those limits; the state lives in the Django cache named by
``QB_OAUTH["CACHE"]`` (Redis or memcached in production), so every worker of
every machine that shares that cache shares the limits.

Two primitives, each made of the cache operations every Django backend has
(``add``, ``incr``, ``get_many``, ``touch``, ``delete``), so any shared cache
works and no second connection needs configuring:

* **In flight: a semaphore of slot keys.** ``API_CONCURRENCY`` keys per realm;
  a request takes a free one with ``cache.add(key, owner, timeout=ttl)`` (only
  one ``add`` of a key can win) and deletes it when its answer is read. The
  key's timeout is a little more than ``HTTP_TIMEOUT``, which bounds the
  request as a whole: a live holder always finishes first, and the slot of a
  worker killed mid-request frees itself when the timeout passes.
* **Per window: counters of short buckets.** The window (``API_RATE_WINDOW``,
  a minute) is cut into :data:`BUCKETS` buckets, each a counter key. A request
  increments the current bucket (``incr`` is atomic and returns the new
  value), then reads the previous ``BUCKETS + MARGIN`` ones: if the sum is
  over the limit it takes its increment back and waits for the next bucket.
  Any interval of one window's length lies within ``BUCKETS + 1`` buckets,
  and the :data:`MARGIN` bucket more absorbs the time a request takes to reach
  Intuit, so Intuit never counts more than the limit; the price is that a
  realm at its limit gets ``BUCKETS / (BUCKETS + 1 + MARGIN)`` of it (94 %,
  470 a minute).

On Django's own ``RedisCache`` the counting is a short Lua script instead
(:data:`_RATE_SCRIPT`, :data:`_INCR_SCRIPT`): one round trip, and the check and
the count are atomic; the slot keys are set, read and deleted through the same
redis-py client (``SET NX EX``, ``MGET``, ``DEL``), made once per cache object
(:func:`_redis`), since ``RedisCache`` makes a new client for every operation.
A call costs about four round trips to the cache.

A request that cannot get both within ``API_WAIT`` seconds raises
:class:`~qb_oauth.exceptions.IntuitUnavailable` instead of being sent to be
refused. Should the cache itself fail, the request goes unlimited (logged):
Intuit's 429s are then retried, and an outage of the cache is not one of
QuickBooks. The clocks of the machines should agree (NTP): the buckets are
numbered by wall-clock time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache

from .conf import qb_settings
from .exceptions import IntuitUnavailable

__all__ = [
    "BUCKETS",
    "KEY_PREFIX",
    "MARGIN",
    "incr_many",
    "limits_cache",
    "slot_ttl",
    "within_limits",
]

#: Buckets per rate window.
BUCKETS = 30
#: Buckets counted beyond the window: slack for the time a request takes to reach Intuit
#: (2 s of a minute).
MARGIN = 1
#: The prefix of every key qb_oauth keeps in the cache (after the cache's own KEY_PREFIX).
KEY_PREFIX = "qb_oauth"

logger = logging.getLogger("qb_oauth.api")

_MAX_POLL = 0.05  # the longest pause between two looks for a free slot

#: INCR each key; give a key just made its timeout (any Redis version).
_INCR_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out
"""

#: Count one request in KEYS[1] if KEYS[1..n] hold fewer than ARGV[2]; 1 if counted.
_RATE_SCRIPT = """
local total = 0
for i, v in ipairs(redis.call('MGET', unpack(KEYS))) do
  if v then total = total + tonumber(v) end
end
if total >= tonumber(ARGV[2]) then return 0 end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


def limits_cache() -> BaseCache:
    """The Django cache named by ``QB_OAUTH["CACHE"]``."""
    return caches[qb_settings.CACHE]


def slot_ttl() -> int:
    """Seconds a slot key lives: more than the longest request (``HTTP_TIMEOUT``)."""
    return math.ceil(qb_settings.HTTP_TIMEOUT) + 2


def _redis(cache: BaseCache) -> Any:
    """The redis-py client under Django's own ``RedisCache``, made once per cache object
    (Django's ``caches`` are per thread), or None for any other backend.

    ``RedisCache`` builds a new client object for every operation, which costs more
    than the round trip itself on a local Redis; the limits make four of them per API
    call, so they talk to the client directly, over the cache's own connection pool and
    keys (``make_key``).
    """
    if not isinstance(cache, RedisCache):
        return None
    client = cache.__dict__.get("_qb_oauth_redis")
    if client is None:
        client = cache._cache.get_client(write=True)
        cache.__dict__["_qb_oauth_redis"] = client
    return client


def incr_many(cache: BaseCache, keys: list[str], timeout: int) -> list[int]:
    """Add 1 to each counter of ``keys`` (made at 0, living ``timeout`` seconds, when
    missing); their new values. A result of 1 means this call made the counter.

    On Django's own ``RedisCache``, one round trip (a script: INCR, and EXPIRE when new);
    elsewhere ``incr``, and ``add`` first for a key that is missing.
    """
    client = _redis(cache)
    if client is not None:
        full = [cache.make_key(key) for key in keys]
        return [int(v) for v in client.eval(_INCR_SCRIPT, len(full), *full, timeout)]
    values = []
    for key in keys:
        try:
            values.append(cache.incr(key))
        except ValueError:  # no such key yet (or it just expired)
            cache.add(key, 0, timeout=timeout)
            values.append(cache.incr(key))
    return values


def _counted(cache: BaseCache, key: str, earlier: list[str], limit: int, timeout: int) -> bool:
    """Count one request in bucket ``key`` if it and the ``earlier`` buckets hold fewer
    than ``limit``; whether it was counted."""
    client = _redis(cache)
    if client is not None:  # one round trip, and atomic
        keys = [cache.make_key(k) for k in (key, *earlier)]
        return bool(client.eval(_RATE_SCRIPT, len(keys), *keys, timeout, limit))
    [count] = incr_many(cache, [key], timeout)
    if count <= limit:
        values = cache.get_many(earlier).values()
        if count + sum(int(v) for v in values) <= limit:
            return True
    with contextlib.suppress(ValueError):
        cache.decr(key)  # taken back: it is not sent now
    return False


def _unavailable(realm: str, what: str) -> IntuitUnavailable:
    return IntuitUnavailable(
        f"The API limits of realm {realm} ({what}) kept this call waiting longer than "
        f"API_WAIT ({qb_settings.API_WAIT:g} s); it was not sent."
    )


def _add(cache: BaseCache, key: str, owner: str, ttl: int) -> bool:
    client = _redis(cache)
    if client is not None:
        return bool(client.set(cache.make_key(key), owner, nx=True, ex=ttl))
    return cache.add(key, owner, timeout=ttl)


def _held(cache: BaseCache, keys: list[str]) -> set[str]:
    client = _redis(cache)
    if client is not None:
        values = client.mget([cache.make_key(k) for k in keys])
        return {k for k, v in zip(keys, values, strict=True) if v is not None}
    return set(cache.get_many(keys))


def _take_slot(cache: BaseCache, base: str, realm: str, deadline: float) -> tuple[str, str]:
    size = qb_settings.API_CONCURRENCY
    ttl = slot_ttl()
    owner = uuid.uuid4().hex
    keys = [f"{base}:slot:{i}" for i in range(size)]
    first = random.choice(keys)  # mostly free: one round trip
    if _add(cache, first, owner, ttl):
        return first, owner
    pause = 0.002
    while True:
        held = _held(cache, keys)
        free = [k for k in keys if k not in held]
        random.shuffle(free)
        for key in free:
            if _add(cache, key, owner, ttl):
                return key, owner
        if time.monotonic() + pause > deadline:
            raise _unavailable(realm, f"{size} in flight")
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, _MAX_POLL)


def _take_rate(
    cache: BaseCache, base: str, realm: str, limit: int, deadline: float, what: str
) -> None:
    window = qb_settings.API_RATE_WINDOW
    length = window / BUCKETS
    timeout = math.ceil(window + (MARGIN + 2) * length) + 1
    while True:
        now = time.time()
        bucket = int(now // length)
        key = f"{base}:{bucket}"
        earlier = [f"{base}:{b}" for b in range(bucket - BUCKETS - MARGIN, bucket)]
        if _counted(cache, key, earlier, limit, timeout):
            return
        # The earliest relief: the oldest counted bucket leaves the window.
        pause = (bucket + 1) * length - now + random.uniform(0, min(length / 10, 0.05))
        if time.monotonic() + pause > deadline:
            raise _unavailable(realm, f"{limit} per {window:g} s{what}")
        time.sleep(pause)


@contextlib.contextmanager
def within_limits(environment: str, realm_id: str, *, batch: bool = False) -> Iterator[None]:
    """Hold one API request of ``realm_id`` within Intuit's limits while the block runs.

    Takes a slot of the realm's ``API_CONCURRENCY``, then one of its
    ``API_RATE_LIMIT`` per window (and of ``API_BATCH_RATE_LIMIT`` for a Batch
    request), waiting at most ``API_WAIT`` seconds for them; the slot is given
    back when the block ends. Raises :class:`IntuitUnavailable` when the wait
    would be longer: nothing was sent.
    """
    cache = limits_cache()
    base = f"{KEY_PREFIX}:lim:{environment}:{realm_id}"
    started = time.monotonic()
    deadline = started + qb_settings.API_WAIT
    key = owner = None
    try:
        key, owner = _take_slot(cache, base, realm_id, deadline)
        if batch:  # the tighter limit first: the other is counted closest to the send
            _take_rate(
                cache,
                f"{base}:batch",
                realm_id,
                qb_settings.API_BATCH_RATE_LIMIT,
                deadline,
                " for Batch",
            )
        _take_rate(cache, f"{base}:rate", realm_id, qb_settings.API_RATE_LIMIT, deadline, "")
        if time.monotonic() - started > 0.5:  # it waited: the slot's life starts again now
            client = _redis(cache)
            if client is not None:
                client.expire(cache.make_key(key), slot_ttl())
            else:
                cache.touch(key, slot_ttl())
    except IntuitUnavailable:
        _release(cache, key, owner)
        raise
    except Exception:  # noqa: BLE001 - the cache failed: send unlimited, Intuit's 429s retried
        logger.warning(
            "The cache of the QuickBooks API limits failed; this call goes unlimited.",
            exc_info=True,
        )
        _release(cache, key, owner)
        key = owner = None
    try:
        yield
    finally:
        _release(cache, key, owner)


def _release(cache: BaseCache, key: str | None, owner: str | None) -> None:
    # The slot's timeout (HTTP_TIMEOUT + 2 s, renewed after a wait) outlasts the request,
    # which HTTP_TIMEOUT bounds as a whole: the key is still ours, delete it unread.
    if key is None:
        return
    try:
        client = _redis(cache)
        if client is not None:
            client.delete(cache.make_key(key))
        else:
            cache.delete(key)
    except Exception:  # noqa: BLE001 - the key's timeout frees it
        logger.warning("Could not give back a QuickBooks API slot.", exc_info=True)
