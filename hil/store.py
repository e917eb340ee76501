"""The run store: one SQLite file (WAL) per runs folder with runs, metrics, events, counters and
control requests. Trainers write as they go; the service and any number of readers read at once.

A run that was ``running`` or ``paused`` when its process died is marked ``failed`` the next
time the store is opened (its pid is gone), so a crash leaves a consistent store; a running
service notices sooner, from the trainer's heartbeat (:mod:`hil.liveness`).
"""

import csv
import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

STORE_NAME = "hil.sqlite"
LIVE = ("running", "paused")
ACTIONS = ("stop", "pause", "resume")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, run_dir TEXT NOT NULL, config TEXT NOT NULL, device TEXT NOT NULL,
    identity TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, started REAL NOT NULL,
    stopped REAL, exit_reason TEXT, pid INTEGER NOT NULL, host TEXT NOT NULL, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, step INTEGER NOT NULL,
    epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, time REAL NOT NULL,
    kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS counters (
    run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS heartbeats (run_id TEXT PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, action TEXT NOT NULL,
    time REAL NOT NULL, done REAL);
"""


class UnknownRun(KeyError):
    """No run with this id in the store."""


class Metric(BaseModel):
    """One metric value of a run; ``id`` is the cursor clients pass back as ``since``."""

    id: int
    step: int
    epoch: int
    name: str
    value: float
    time: float


@dataclass(frozen=True)
class Event:
    id: int
    run_id: str
    time: float
    kind: str
    data: dict[str, Any]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Thread-safe access to one store file; each thread gets its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection().executescript(SCHEMA)  # executescript manages its own transaction
        self.mark_dead_runs()

    @classmethod
    def for_runs(cls, runs_dir: Path) -> "RunStore":
        """The store of a runs folder (``runs/hil.sqlite``)."""
        return cls(runs_dir / STORE_NAME)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections must stay on their thread)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def _db(self, write: bool = True) -> "_Transaction":
        return _Transaction(self._connection(), write)

    # ----------------------------------------------------------------- writes (trainer)

    def start_run(self, run_id: str, run_dir: Path, config: dict[str, Any], device: str, identity: str,
                  seed: int, pid: int | None = None, host: str | None = None) -> None:
        """Record a run as running in process ``pid`` on ``host`` (default: this one; a resumed run is updated
        in place)."""
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (id, run_dir, config, device, identity, seed, status, started, pid, host, heartbeat)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " config = excluded.config, device = excluded.device, identity = excluded.identity,"
                " status = 'running', stopped = NULL, exit_reason = NULL, pid = excluded.pid,"
                " host = excluded.host, heartbeat = excluded.heartbeat",
                (run_id, str(run_dir), json.dumps(config), device, identity, seed, now, pid or os.getpid(),
                 host or socket.gethostname(), now))
            db.execute("UPDATE controls SET done = ? WHERE run_id = ? AND done IS NULL", (now, run_id))

    def log_metrics(self, run_id: str, step: int, epoch: int, values: dict[str, float]) -> None:
        now = time.time()
        with self._db() as db:
            db.executemany("INSERT INTO metrics (run_id, step, epoch, name, value, time) VALUES (?, ?, ?, ?, ?, ?)",
                           [(run_id, step, epoch, k, float(v), now) for k, v in values.items()])
            db.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (now, run_id))

    def drop_metrics_after(self, run_id: str, step: int) -> int:
        """Delete a run's metric rows past ``step`` (a resumed run's checkpoint); returns how many."""
        with self._db() as db:
            return db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, step)).rowcount

    def log_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self._db() as db:
            db.execute("INSERT INTO events (run_id, time, kind, data) VALUES (?, ?, ?, ?)",
                       (run_id, time.time(), kind, json.dumps(data or {})))

    def set_counters(self, run_id: str, values: dict[str, float]) -> None:
        now = time.time()
        with self._db() as db:
            db.executemany("INSERT INTO counters (run_id, name, value, time) VALUES (?, ?, ?, ?) ON CONFLICT"
                           " (run_id, name) DO UPDATE SET value = excluded.value, time = excluded.time",
                           [(run_id, k, float(v), now) for k, v in values.items()])

    def set_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Move a run to a new status; a final one (not running or paused) records the stop time."""
        with self._db() as db:
            stopped = None if status in LIVE else time.time()
            db.execute("UPDATE runs SET status = ?, stopped = ?, exit_reason = ? WHERE id = ?",
                       (status, stopped, reason, run_id))

    def beat(self, run_id: str) -> str | None:
        """Write the run's heartbeat while it is live; returns its status (None for an unknown run)."""
        with self._db() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None and row["status"] in LIVE:
                db.execute("INSERT INTO heartbeats (run_id, time) VALUES (?, ?) ON CONFLICT (run_id)"
                           " DO UPDATE SET time = excluded.time", (run_id, time.time()))
        return None if row is None else str(row["status"])

    def mark_failed(self, run_id: str, pid: int, reason: str) -> bool:
        """Mark a run live in process ``pid`` failed, with a ``failed`` event giving the reason.

        False if it is not live, or was resumed by another process meanwhile.
        """
        now = time.time()
        with self._db() as db:
            if not db.execute("UPDATE runs SET status = 'failed', stopped = ?, exit_reason = ? WHERE id = ?"
                              " AND pid = ? AND status IN ('running', 'paused')", (now, reason, run_id, pid)).rowcount:
                return False
            db.execute("INSERT INTO events (run_id, time, kind, data) VALUES (?, ?, 'failed', ?)",
                       (run_id, now, json.dumps({"reason": reason})))
            db.execute("UPDATE controls SET done = ? WHERE run_id = ? AND done IS NULL", (now, run_id))
        return True

    def take_control(self, run_id: str) -> str | None:
        """The oldest pending control request of a run, marked done; None when there is none.

        Called every training step: the common case (nothing pending) is a read, no write lock.
        """
        with self._db(write=False) as db:
            row = db.execute("SELECT id, action FROM controls WHERE run_id = ? AND done IS NULL ORDER BY id LIMIT 1",
                             (run_id,)).fetchone()
        if row is None:
            return None
        with self._db() as db:
            taken = db.execute("UPDATE controls SET done = ? WHERE id = ? AND done IS NULL",
                               (time.time(), row["id"])).rowcount
        return str(row["action"]) if taken else None

    def mark_dead_runs(self) -> list[str]:
        """Mark live runs of this host whose process is gone as failed; returns their ids."""
        host = socket.gethostname()
        reason = "the training process {} on {} ended without closing the run (killed or crashed)"
        return [run["id"] for run in self.live_runs() if run["host"] == host and not pid_alive(run["pid"])
                and self.mark_failed(run["id"], run["pid"], reason.format(run["pid"], host))]

    # ----------------------------------------------------------------- reads (service)

    def request_control(self, run_id: str, action: str) -> None:
        """Ask a live run to stop, pause or resume at its next step boundary."""
        with self._db() as db:
            db.execute("INSERT INTO controls (run_id, action, time) VALUES (?, ?, ?)", (run_id, action, time.time()))

    def live_runs(self) -> list[dict[str, Any]]:
        """Running and paused runs: id, pid, host and ``beat`` (last heartbeat, else the run's start)."""
        with self._db(write=False) as db:
            return [dict(r) for r in db.execute(
                "SELECT runs.id, pid, host, COALESCE(heartbeats.time, started) AS beat FROM runs LEFT JOIN"
                " heartbeats ON heartbeats.run_id = runs.id WHERE status IN ('running', 'paused')").fetchall()]

    def runs(self) -> list[dict[str, Any]]:
        with self._db(write=False) as db:
            return [self._run_row(r) for r in db.execute("SELECT * FROM runs ORDER BY started DESC").fetchall()]

    def run(self, run_id: str) -> dict[str, Any]:
        with self._db(write=False) as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRun(run_id)
            out = self._run_row(row)
            out["counters"] = {r["name"]: r["value"] for r in
                               db.execute("SELECT name, value FROM counters WHERE run_id = ?", (run_id,))}
            return out

    def metrics(self, run_id: str, since: int = 0, limit: int = 10000) -> list[Metric]:
        """Metrics with id above ``since`` (the cursor a client passes back), oldest first."""
        self.run(run_id)
        with self._db(write=False) as db:
            rows = db.execute("SELECT id, step, epoch, name, value, time FROM metrics WHERE run_id = ? AND id > ?"
                              " ORDER BY id LIMIT ?", (run_id, since, limit)).fetchall()
        return [Metric(**dict(r)) for r in rows]

    def newest_metrics(self, run_id: str, count: int) -> list[Metric]:
        """The newest ``count`` metric rows of a run, oldest first."""
        with self._db(write=False) as db:
            rows = db.execute("SELECT id, step, epoch, name, value, time FROM metrics WHERE run_id = ?"
                              " ORDER BY id DESC LIMIT ?", (run_id, count)).fetchall()
        return [Metric(**dict(r)) for r in reversed(rows)]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The newest value of every metric name of a run."""
        with self._db(write=False) as db:
            rows = db.execute("SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics"
                              " WHERE run_id = ? GROUP BY name)", (run_id,)).fetchall()
        return {r["name"]: r["value"] for r in rows}

    def events(self, run_id: str, after: int = 0) -> list[Event]:
        with self._db(write=False) as db:
            rows = db.execute("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id",
                              (run_id, after)).fetchall()
        return [Event(r["id"], r["run_id"], r["time"], r["kind"], json.loads(r["data"])) for r in rows]

    def export_csv(self, run_id: str, path: Path) -> int:
        """Write a run's metrics as CSV (id, step, epoch, name, value, time); returns the row count."""
        rows = self.metrics(run_id, limit=-1)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "step", "epoch", "name", "value", "time"])
            writer.writerows([m.id, m.step, m.epoch, m.name, m.value, m.time] for m in rows)
        return len(rows)

    @staticmethod
    def _run_row(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["config"] = json.loads(out["config"])
        return out


class _Transaction:
    """``with store._db() as db``: one transaction on this thread's connection."""

    def __init__(self, db: sqlite3.Connection, write: bool) -> None:
        self.db = db
        self.begin = "BEGIN IMMEDIATE" if write else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, kind: object, *exc: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
