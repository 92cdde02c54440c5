"""The in-process tier: :class:`LocalCache`, a thread-safe LRU with a TTL per entry.

This is the library's hot path: a guard asks it before anything else, and a hit
must cost about as much as a dict lookup. So a hit takes no lock; writes and
evictions take a lock.

It is also what a worker keeps in memory for every closed task it saw, so an
entry is as small as it can be: the workid (the key) and one float (the value)
whose magnitude is the expiry time and whose sign is the answer (+ closed,
- open). The :class:`~taskguard.state.TaskState` is built on a hit (~0.1 µs)
rather than stored (~140 bytes per entry more).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from taskguard.state import Origin, TaskState

__all__ = ["LocalCache"]

# Lock-free reads rely on the GIL making each OrderedDict method call atomic (see
# LocalCache._get_lock_free). A free-threaded build (3.13t) has no such guarantee,
# so there every read takes the lock too. Checked once: a GIL that is off at import
# may come back later, but the locked path is safe either way.
_GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

_new_state = tuple.__new__  # TaskState(...) without NamedTuple's Python-level __new__
_LOCAL = Origin.LOCAL


class LocalCache:
    """An in-process cache of task states, LRU-bounded by ``maxsize``, with a TTL per entry.

    ``maxsize == 0`` turns the tier off: :meth:`get` always misses and :meth:`put`
    stores nothing. ``clock`` (seconds, monotonic) is there for tests.
    Keys are plain ``str`` workids, as :func:`~taskguard.state.validate_workid`
    returns them.
    """

    __slots__ = ("_clock", "_data", "_lock", "_maxsize")

    def __init__(self, maxsize: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0 turns the tier off), not {maxsize}")
        self._maxsize = maxsize
        self._clock = clock
        # workid -> +expiry (closed) or -expiry (open), by self._clock. The clock
        # must be positive (monotonic() is), so 0 never stands for an answer.
        self._data: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        """The most entries kept; 0 means the tier is off."""
        return self._maxsize

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._data)

    def _get_lock_free(self, workid: str) -> TaskState | None:
        """The cached state of ``workid`` (``origin="local"``), or None.

        An expired entry is dropped and is a miss; a hit makes the entry the most
        recently used. A hit takes no lock.
        """
        # Why no lock: under the GIL, OrderedDict.get, move_to_end and popitem are
        # single C calls that run no Python code for str keys (str hashing and
        # comparison are C), so none of them can interleave with another. A writer
        # may still run *between* our two calls: if it evicted or dropped the key,
        # move_to_end raises KeyError, and the entry we already read is still a valid
        # answer (the read happened before the removal). If it replaced the entry,
        # move_to_end only refreshes the newer one.
        data = self._data
        entry = data.get(workid)
        if entry is None:
            return None
        closed = entry > 0
        if (entry if closed else -entry) <= self._clock():
            self._drop_expired(workid, entry)
            return None
        try:  # noqa: SIM105 - contextlib.suppress would cost ~100 ns on every hit
            data.move_to_end(workid)
        except KeyError:
            pass
        return _new_state(TaskState, (workid, closed, _LOCAL))

    def _get_locked(self, workid: str) -> TaskState | None:
        """The cached state of ``workid`` (``origin="local"``), or None."""
        with self._lock:
            entry = self._data.get(workid)
            if entry is None:
                return None
            closed = entry > 0
            if (entry if closed else -entry) <= self._clock():
                del self._data[workid]
                return None
            self._data.move_to_end(workid)
            return _new_state(TaskState, (workid, closed, _LOCAL))

    get = _get_lock_free if _GIL_ENABLED else _get_locked

    def _drop_expired(self, workid: str, entry: float) -> None:
        with self._lock:
            # Only the entry we saw expire: a put may have replaced it meanwhile.
            if self._data.get(workid) == entry:
                del self._data[workid]

    def put(self, workid: str, closed: bool, ttl: float) -> None:
        """Remember ``workid``'s state for ``ttl`` seconds, evicting the least
        recently used entry when full. ``ttl <= 0`` drops any entry instead."""
        if self._maxsize == 0:
            return
        if ttl <= 0:
            self.delete(workid)
            return
        expires = self._clock() + ttl
        entry = expires if closed else -expires
        with self._lock:
            data = self._data
            data[workid] = entry
            data.move_to_end(workid)
            while len(data) > self._maxsize:
                data.popitem(last=False)

    def delete(self, workid: str) -> None:
        """Forget ``workid`` (nothing happens if it is not cached)."""
        # Every open answer (open_ttl=0) lands here: skip the lock when there is
        # nothing to drop. A put racing with us is a write that comes after.
        if workid in self._data:
            with self._lock:
                self._data.pop(workid, None)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        return f"LocalCache(maxsize={self._maxsize}, entries={len(self._data)})"
