"""Durable record logs: one SQLite file per actor.

An acceptor's promises and accepted pvalues, a leader's ballot rounds and a replica's
configurations are :class:`~pmmc_ray.core.messages.Persist` records. They are appended
here, in order, and read back in the same order to rebuild the role after a restart.

Durability: WAL mode with ``synchronous=FULL`` makes SQLite fsync the log before a
commit returns, so once :meth:`RecordLog.append` returns the records survive a crash
of the process or the machine. The caller must not send anything that depends on a
record before ``append`` returns (see ``pmmc_ray.core.messages``).

A meta row ``initialized`` is written when the log is created. A restarted actor
that finds neither the file nor that row knows its storage is gone, which is not the
same as a fresh start: an acceptor that forgot its promises must not vote again.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RecordLog", "storage_path"]

_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def storage_path(storage_dir: str | os.PathLike, actor_name: str) -> Path:
    """``{data_dir}/{namespace}/{actor_name}.sqlite``."""
    return Path(storage_dir) / f"{actor_name}.sqlite"


class RecordLog:
    """An append-only log of pickled records in one SQLite database."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # --- opening -------------------------------------------------------------------------

    @staticmethod
    def exists(path: Path) -> bool:
        """True if the file exists and holds the ``initialized`` marker."""
        if not path.exists():
            return False
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'initialized'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return False
        return row is not None

    @staticmethod
    def owner(path: Path) -> str | None:
        """The deployment id written at creation, or None if absent or unreadable."""
        if not RecordLog.exists(path):
            return None
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'deployment'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        return None if row is None else row[0]

    @classmethod
    def create(cls, path: Path, deployment_id: str = "") -> RecordLog:
        """Start a new, empty log at ``path`` owned by ``deployment_id``, replacing any
        file that is there."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in _SIDE_FILES:
            try:
                os.unlink(f"{path}{suffix}")
            except FileNotFoundError:
                pass
        log = cls(path, cls._connect(path))
        with log._conn:
            log._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('deployment', ?)", (deployment_id,)
            )
            log._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('initialized', ?)", (repr(time.time()),)
            )
        return log

    @classmethod
    def open(cls, path: Path) -> RecordLog:
        """Open an existing log (check :meth:`exists` first)."""
        return cls(path, cls._connect(path))

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, record BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        return conn

    # --- records ---------------------------------------------------------------------------

    def append(self, records: Iterable[Any]) -> None:
        """Make ``records`` durable, in order, in one transaction (fsync'd on commit)."""
        rows = [(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL),) for r in records]
        if not rows:
            return
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO records (record) VALUES (?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def load(self) -> list[Any]:
        """Every record, in the order it was appended."""
        cur = self._conn.execute("SELECT record FROM records ORDER BY seq")
        return [pickle.loads(blob) for (blob,) in cur]

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    def close(self) -> None:
        self._conn.close()
