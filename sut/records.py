"""The results store: every run's record in one SQLite file (plain Python, no Ray).

A record is one JSON document (what ran, where, with what, and every test's outcome); the
columns beside it are only there to find records. Writes are one transaction each, taken with
BEGIN IMMEDIATE and a busy timeout, so two runs that end at once both land. The file says it is
ours (the `meta` table); another SQLite file, or no SQLite file at all, is refused by name.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from harness_base import ConfigError, user_data_folder

FORMAT = "ray-mlperf-vision results 1"
BUSY_TIMEOUT_S = 30.0
DB_VARIABLE = "RAY_SUT_RESULTS_DB"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, exit_code INTEGER,
    started TEXT NOT NULL, ended TEXT, profile TEXT, dataset TEXT, group_id TEXT,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key, value));
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


def default_path(flag_value: str | None = None) -> Path:
    """--results-db, else $RAY_SUT_RESULTS_DB, else the user's data folder."""
    if flag_value:
        return Path(flag_value).expanduser()
    if os.environ.get(DB_VARIABLE):
        return Path(os.environ[DB_VARIABLE]).expanduser()
    return user_data_folder() / "results.db"


class RunStore:
    """The records in one database file. Opening checks that the file is ours."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise ConfigError(f"--results-db {self.path}: no such database (nothing recorded "
                              "there yet?)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The last words of a run cut off are written from the watchdog's thread, while
            # the main thread waits in LoadGen: never two threads on the connection at once.
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = %d" % int(BUSY_TIMEOUT_S * 1000))
            self._check_or_create()
        except sqlite3.DatabaseError as error:
            raise self._refusal(error) from None
        except OSError as error:
            why = error.strerror or error
            raise ConfigError(f"--results-db {self.path}: cannot open it ({why}). Give a "
                              "writable path, or --no-record.") from None

    def _refusal(self, error: Exception) -> ConfigError:
        text = str(error)
        if "locked" in text or "busy" in text:
            return ConfigError(f"--results-db {self.path} stayed locked by another process for "
                               f"{BUSY_TIMEOUT_S:g} s ({text}); try again, or give another "
                               "--results-db.")
        return ConfigError(f"--results-db {self.path} is not a results database of this "
                           f"harness ({text}): move it away, or give another --results-db.")

    def _check_or_create(self) -> None:
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            with self._transaction():
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            return
        found = None
        if "meta" in tables:
            found = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if not found or found[0] != FORMAT:
            raise sqlite3.DatabaseError(f"tables {sorted(tables)}, format "
                                        f"{found[0] if found else 'unknown'}")

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------

    def add(self, record: dict) -> bool:
        """Store a record; False (and nothing written) if one with its id is there already."""
        try:
            with self._transaction():
                if self._db.execute("SELECT 1 FROM runs WHERE id = ?",
                                    (record["id"],)).fetchone():
                    return False
                self._db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record["id"], record["kind"], record["status"], record.get("exit_code"),
                     record["started"], record.get("ended"), record.get("profile"),
                     record.get("dataset"), record.get("group"),
                     json.dumps(record, default=str)))
                self._db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?, ?)",
                                     [(record["id"], key, value)
                                      for key, value in record.get("tags", {}).items()])
            return True
        except sqlite3.DatabaseError as error:
            raise self._refusal(error) from None

    # ---- reading -------------------------------------------------------------------------

    def has(self, run_id: str) -> bool:
        try:
            return self._db.execute("SELECT 1 FROM runs WHERE id = ?",
                                    (run_id,)).fetchone() is not None
        except sqlite3.DatabaseError as error:
            raise self._refusal(error) from None

    def find(self, tags: list[str] = (), profile: str | None = None, since: str | None = None,
             group: str | None = None, limit: int | None = None) -> list[dict]:
        """Records, oldest first, that carry every tag (word or key=value), of the profile,
        started since (an ISO date or time, or an age such as 2h or 3d)."""
        where, values = [], []
        for tag in tags:
            key, _, value = tag.partition("=")
            where.append("id IN (SELECT run_id FROM tags WHERE key = ? AND value = ?)")
            values += [key, value]
        if profile:
            where.append("profile = ?")
            values.append(profile)
        if since:
            where.append("started >= ?")
            values.append(since_to_iso(since))
        if group:
            where.append("group_id = ?")
            values.append(group)
        query = "SELECT record FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY started, id"
        try:
            rows = self._db.execute(query, values).fetchall()
        except sqlite3.DatabaseError as error:
            raise self._refusal(error) from None
        records = [json.loads(row[0]) for row in rows]
        return records[-limit:] if limit else records

    def get(self, run_id: str) -> dict:
        """The record whose id is run_id or starts with it (at least 4 characters)."""
        if len(run_id) < 4 or not re.fullmatch(r"[0-9a-f]+", run_id):
            raise ConfigError(f"run id {run_id!r}: give at least 4 hex digits of an id that "
                              "`python -m sut runs list` shows")
        try:
            rows = self._db.execute("SELECT record FROM runs WHERE id LIKE ?",
                                    (run_id + "%",)).fetchall()
        except sqlite3.DatabaseError as error:
            raise self._refusal(error) from None
        if not rows:
            raise ConfigError(f"no run {run_id} in {self.path} (`python -m sut runs list` shows "
                              "the runs recorded there)")
        if len(rows) > 1:
            raise ConfigError(f"run id {run_id} is the start of {len(rows)} ids: give more of it")
        return json.loads(rows[0][0])


def since_to_iso(since: str) -> str:
    match = re.fullmatch(r"(\d+)([mhdw])", since.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        moment = datetime.now(timezone.utc) - timedelta(**{unit: int(match.group(1))})
        return moment.isoformat(timespec="seconds")
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise ConfigError(f"--since {since!r}: give a date (2026-12-01), a time "
                          "(2026-12-01T14:00) or an age (30m, 2h, 3d, 1w)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the user's local time
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Random, so that a few leading characters tell runs apart (the store orders by time)."""
    return os.urandom(16).hex()
