"""Durable record logs: one SQLite file per actor, locked while its actor lives.

An acceptor's promises and accepted pvalues, a leader's ballot identity and rounds, and
a replica's decided slots and checkpoints are :class:`~pmmc_ray.core.messages.Persist`
records. They are appended here, in order, and read back in the same order to rebuild
the role after a restart. A record that supersedes everything before it (a replica's
checkpoint) deletes the earlier rows in the same transaction, so a replica's file
stays bounded by one checkpoint plus the slots after it.

Durability: WAL mode with ``synchronous=FULL`` makes SQLite fsync the log before a
commit returns, so once :meth:`RecordLog.append` returns the records survive a crash
of the process or the machine. The caller must not send anything that depends on a
record before ``append`` returns (see ``pmmc_ray.core.messages``).

Each file carries meta rows: ``initialized`` (written when the log is created: a
restarted actor that finds no file with that row knows its storage is gone, which is
not the same as a fresh start), ``deployment`` (the deployment that owns the file;
another deployment never loads or overwrites it) and ``format`` (this module's
:data:`FORMAT`; a file of another format is refused, never reinterpreted).

Locks: an actor holds an exclusive ``flock`` on ``{name}.lock`` next to its log for as
long as its process lives (the kernel drops it when the process dies, however it
dies). A second live process, say an actor of another Ray cluster deploying the same
namespace onto the same directory, cannot take it, and refuses instead of touching
the files.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.messages import supersedes_earlier

__all__ = [
    "FORMAT",
    "FileLock",
    "RecordLog",
    "StorageError",
    "StorageFormatError",
    "StorageLocked",
    "lock_path",
    "storage_path",
]

FORMAT = "1"
"""The record-log format this version writes and reads."""

_SIDE_FILES = ("", "-wal", "-shm", "-journal")


class StorageError(RuntimeError):
    """An actor's storage cannot be used as it is; nothing was changed."""


class StorageLocked(StorageError):
    """Another live process holds the storage."""


class StorageFormatError(StorageError):
    """The file was written in a format this version cannot read."""


def storage_path(storage_dir: str | os.PathLike, actor_name: str) -> Path:
    """``{data_dir}/{namespace}/{actor_name}.sqlite``."""
    return Path(storage_dir) / f"{actor_name}.sqlite"


def lock_path(path: Path) -> Path:
    """The lock file of the log at ``path``: ``{actor_name}.lock``."""
    return path.with_suffix(".lock")


class FileLock:
    """An exclusive advisory lock (``flock``) on a file, held until :meth:`release` or
    the end of the process. The file holds a line saying who holds it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, holder: str, timeout_s: float = 0.0) -> FileLock:
        """Take the lock, retrying for up to ``timeout_s`` (a killed predecessor may
        still be exiting); raise :class:`StorageLocked` naming the holder otherwise."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    who = cls._read(fd)
                    os.close(fd)
                    raise StorageLocked(
                        f"{path} is held by another live process ({who or 'unknown holder'})"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode() + b"\n", 0)
        return cls(path, fd)

    @staticmethod
    def _read(fd: int) -> str:
        try:
            return os.pread(fd, 512, 0).decode(errors="replace").strip()
        except OSError:
            return ""

    @classmethod
    def holder(cls, path: Path) -> str | None:
        """Who holds the lock at ``path`` right now, or None if nobody does."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return cls._read(fd) or "unknown holder"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


class RecordLog:
    """An append-only log of pickled records in one SQLite database."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self.bytes_since_checkpoint = 0  # record bytes after the last superseding record
        self.checkpoint_bytes = 0  # the size of that record

    # --- opening -------------------------------------------------------------------------

    @staticmethod
    def _meta_of(path: Path, key: str) -> str | None:
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        return None if row is None else row[0]

    @staticmethod
    def exists(path: Path) -> bool:
        """True if the file exists and holds the ``initialized`` marker."""
        return path.exists() and RecordLog._meta_of(path, "initialized") is not None

    @staticmethod
    def owner(path: Path) -> str | None:
        """The deployment id written at creation, or None if absent or unreadable."""
        if not RecordLog.exists(path):
            return None
        return RecordLog._meta_of(path, "deployment")

    @classmethod
    def create(cls, path: Path, deployment_id: str = "") -> RecordLog:
        """Start a new, empty log at ``path`` owned by ``deployment_id``.

        Never replaces a log: raises FileExistsError if an initialized one is there. A
        file without the ``initialized`` marker never held a record (the marker is
        committed before any record can be) and is removed.
        """
        if cls.exists(path):
            raise FileExistsError(f"{path} already holds a record log; it is never replaced")
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in _SIDE_FILES:
            try:
                os.unlink(f"{path}{suffix}")
            except FileNotFoundError:
                pass
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must precede the first table
        log = cls(path, cls._configure(conn))
        with log._conn:
            log._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("deployment", deployment_id),
                    ("format", FORMAT),
                    ("initialized", repr(time.time())),
                ],
            )
        return log

    @classmethod
    def open(cls, path: Path) -> RecordLog:
        """Open an existing log (check :meth:`exists` first); raise
        :class:`StorageFormatError` if this version cannot read it."""
        fmt = cls._meta_of(path, "format")
        if fmt != FORMAT:
            raise StorageFormatError(
                f"{path} is in record-log format {fmt or '0 (pmmc-ray before durable replicas)'}; "
                f"this version reads format {FORMAT} only and never rewrites another format"
            )
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        return cls(path, cls._configure(conn))

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> sqlite3.Connection:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # After each checkpoint the write-ahead log shrinks back to at most this size.
        conn.execute("PRAGMA journal_size_limit=4194304")
        conn.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, record BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        return conn

    # --- records ---------------------------------------------------------------------------

    def append(self, records: Iterable[Any]) -> None:
        """Make ``records`` durable, in order, in one transaction (fsync'd on commit).

        A record that supersedes everything before it drops the earlier rows (and the
        earlier records of this call) in the same transaction.
        """
        recs = list(records)
        if not recs:
            return
        cut = max((i for i, r in enumerate(recs) if supersedes_earlier(r)), default=None)
        if cut is not None:
            recs = recs[cut:]
        rows = [(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL),) for r in recs]
        if cut is not None:
            self.checkpoint_bytes = len(rows[0][0])
            self.bytes_since_checkpoint = sum(len(r[0]) for r in rows[1:])
        else:
            self.bytes_since_checkpoint += sum(len(r[0]) for r in rows)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if cut is not None:
                conn.execute("DELETE FROM records")
            conn.executemany("INSERT INTO records (record) VALUES (?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if cut is not None:
            # Give the freed pages back to the disk, then move the write-ahead log into
            # the database and truncate both: the files shrink to the live records.
            conn.execute("PRAGMA incremental_vacuum")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def load(self) -> list[Any]:
        """Every record, in the order it was appended."""
        cur = self._conn.execute("SELECT record FROM records ORDER BY seq")
        blobs = [blob for (blob,) in cur]
        records = [pickle.loads(blob) for blob in blobs]
        if records and supersedes_earlier(records[0]):
            self.checkpoint_bytes = len(blobs[0])
            self.bytes_since_checkpoint = sum(len(b) for b in blobs[1:])
        else:
            self.bytes_since_checkpoint = sum(len(b) for b in blobs)
        return records

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def size_bytes(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        return total

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


def remove_log(path: Path) -> None:
    """Delete a log, its SQLite side files and its lock file (an explicit wipe)."""
    for f in [*(f"{path}{s}" for s in _SIDE_FILES), str(lock_path(path))]:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass
