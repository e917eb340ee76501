"""Store reads shared by every client of the service.

Dashboards poll each second. The service answers them from reads it shares for
:data:`SHARED_SECONDS`: the run list, the status, each run's detail and events, and the newest
metric rows of each run. So the store sees about one read per run and interval however many
dashboards watch; what grows with the clients is the HTTP work of answering each one.
"""

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hil.store import Metric, RunStore

SHARED_SECONDS = 0.5
TAIL_ROWS = 2000
"""Newest metric rows kept per watched run; a client further behind reads the store itself."""
IDLE_SECONDS = 60.0
"""A run's tail is dropped when no client asked for it this long."""


class SharedReads:
    """Values computed once per ``ttl`` seconds per key, whatever the number of callers.

    Keys must be few (the service uses fixed names and the ids of existing runs): nothing is evicted.
    """

    def __init__(self, ttl: float = SHARED_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1]
        value = compute()
        with self._lock:
            self._values[key] = (now, value)
        return value


@dataclass
class _Tail:
    rows: list[Metric]
    floor: int
    """Every row of the run with ``floor < id <= last`` is in ``rows``."""
    read_at: float
    used_at: float
    ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [row.id for row in self.rows]

    @property
    def last(self) -> int:
        return self.ids[-1] if self.ids else self.floor


class MetricsTail:
    """The newest metric rows of each watched run, read from the store at most once per ``ttl``.

    A client whose cursor (``since``) lies within the tail is answered from memory; one further
    behind, such as a dashboard just opened on a long run, from the store.
    """

    def __init__(self, store: RunStore, ttl: float = SHARED_SECONDS, keep: int = TAIL_ROWS) -> None:
        self.store = store
        self.ttl = ttl
        self.keep = keep
        self._lock = threading.Lock()
        self._tails: dict[str, _Tail] = {}

    def page(self, run_id: str, since: int, limit: int) -> list[Metric]:
        """Up to ``limit`` rows of the run with id above ``since``, oldest first."""
        with self._lock:
            tail = self._fresh(run_id)
            if since >= tail.floor:
                start = bisect.bisect_right(tail.ids, since)
                return tail.rows[start:start + limit]
        return self.store.metrics(run_id, since, limit)

    def _fresh(self, run_id: str) -> _Tail:
        now = time.monotonic()
        for idle in [k for k, t in self._tails.items() if now - t.used_at > IDLE_SECONDS]:
            del self._tails[idle]
        tail = self._tails.get(run_id)
        if tail is not None and now - tail.read_at < self.ttl:
            tail.used_at = now
            return tail
        new = [] if tail is None else self.store.metrics(run_id, tail.last, self.keep)
        if tail is None or len(new) == self.keep:  # first look, or too far behind to append: start afresh
            rows = self.store.newest_metrics(run_id, self.keep)
            tail = _Tail(rows, rows[0].id - 1 if len(rows) == self.keep else 0, now, now)
        else:
            rows = tail.rows + new
            dropped = rows[:-self.keep] if len(rows) > self.keep else []
            tail = _Tail(rows[len(dropped):], dropped[-1].id if dropped else tail.floor, now, now)
        self._tails[run_id] = tail
        return tail
