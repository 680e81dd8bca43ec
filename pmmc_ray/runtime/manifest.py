"""A deployment's identity, kept in its data directory: ``deployment.json``.

The cluster's key-value store holds a deployment's record only while the Ray cluster
lives; ``ray stop`` or ``ray down`` empties it. The manifest keeps the same facts on
disk, in ``{data_dir}/{namespace}/deployment.json`` on the node where the deployment
was created, so that :func:`pmmc_ray.deploy` (``pmmc-ray up``) with the same namespace
and data directory re-attaches to the existing data after a whole-cluster restart
instead of starting over.

What it records: the format version, the namespace, the deployment id (written into
every actor's log, so an actor loads only its own deployment's file), the deployment
config, every member ever created (reconfiguration adds members), the configurations
each replica added by reconfiguration was created with, and the node address each
member last ran on (so it is placed next to its disk again).

Nothing here imports ray. Writes are atomic (temporary file, fsync, rename, fsync of
the directory). A manifest this version cannot read is refused, never rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import DeploymentConfig
from .storage import FileLock, StorageLocked

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "DataDirError",
    "Manifest",
    "config_differences",
    "deploy_lock",
    "foreign_files",
    "held_by",
    "read_manifest",
    "remove_empty",
    "wipe",
    "write_manifest",
]

MANIFEST_NAME = "deployment.json"
DEPLOY_LOCK_NAME = "deployment.lock"
FORMAT = 1

IDENTITY_FIELDS = ("replicas", "leaders", "acceptors", "app", "window", "max_sessions")
"""Config fields a re-attached deployment must keep. Sizes and the app define what the
data is; WINDOW decides where a decided reconfiguration takes effect (slot s + WINDOW),
and max_sessions which client sessions the table evicts, so replicas replaying their
logs with another value would diverge. Timing fields may change between runs."""


class DataDirError(RuntimeError):
    """The data directory cannot be used as asked; nothing in it was changed."""


@dataclass
class Manifest:
    namespace: str
    deployment_id: str
    config: dict[str, Any]
    members: list[str]
    joined: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """replica added by reconfiguration -> the configurations it was created with."""
    placement: dict[str, str] = field(default_factory=dict)
    """member -> address of the node it last ran on."""
    state: str = "creating"
    """"creating" until the first deploy finished, then "ready"."""
    format: int = FORMAT
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


def manifest_path(storage_dir: Path) -> Path:
    return Path(storage_dir) / MANIFEST_NAME


def read_manifest(storage_dir: Path) -> Manifest | None:
    """The manifest in ``storage_dir``, None if there is none; :class:`DataDirError` if
    it cannot be read by this version."""
    p = manifest_path(storage_dir)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        data = json.loads(raw)
        fmt = data.get("format") if isinstance(data, dict) else None
    except ValueError as e:
        raise DataDirError(f"{p}: not valid JSON ({e}); refusing to touch this directory") from None
    if fmt != FORMAT:
        raise DataDirError(
            f"{p}: manifest format {fmt!r}, this version reads format {FORMAT} only; "
            "refusing to touch this directory"
        )
    try:
        m = Manifest(**data)
        DeploymentConfig.model_validate(m.config)
    except (TypeError, ValueError) as e:
        raise DataDirError(f"{p}: invalid manifest: {e}") from None
    return m


def write_manifest(storage_dir: Path, m: Manifest) -> None:
    """Write ``m`` atomically: after a crash the old or the new manifest is there, whole."""
    d = Path(storage_dir)
    d.mkdir(parents=True, exist_ok=True)
    m.updated_at = time.time()
    tmp = d / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(m), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, manifest_path(d))
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def config_differences(stored: dict[str, Any], given: DeploymentConfig) -> list[str]:
    """The identity fields in which ``given`` differs from the stored config."""
    old = DeploymentConfig.model_validate(stored)
    return [
        f"{k}: data has {getattr(old, k)!r}, config asks for {getattr(given, k)!r}"
        for k in IDENTITY_FIELDS
        if getattr(old, k) != getattr(given, k)
    ]


def held_by(storage_dir: Path) -> list[str]:
    """Live processes holding an actor lock in ``storage_dir`` ("name: holder")."""
    d = Path(storage_dir)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.lock")):
        if p.name == DEPLOY_LOCK_NAME:
            continue
        who = FileLock.holder(p)
        if who is not None:
            out.append(f"{p.stem}: {who}")
    return out


def foreign_files(storage_dir: Path) -> list[str]:
    """Files in ``storage_dir`` that a deployment without a manifest cannot explain."""
    d = Path(storage_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.suffix != ".lock")


def wipe(storage_dir: Path) -> None:
    """Delete everything in ``storage_dir`` (an explicit act: ``down``, ``--fresh``)."""
    d = Path(storage_dir)
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name == DEPLOY_LOCK_NAME:
            continue  # held by the caller
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def remove_empty(storage_dir: Path) -> None:
    """Remove ``storage_dir`` if only its deploy lock file is left (after :func:`wipe`)."""
    d = Path(storage_dir)
    (d / DEPLOY_LOCK_NAME).unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:
        pass  # not empty (something new arrived) or already gone


@contextmanager
def deploy_lock(storage_dir: Path, holder: str) -> Iterator[None]:
    """Exclusive use of ``storage_dir`` for one deploy / re-attach / wipe at a time."""
    try:
        lock = FileLock.acquire(Path(storage_dir) / DEPLOY_LOCK_NAME, holder, timeout_s=5.0)
    except StorageLocked as e:
        raise DataDirError(f"another deploy or down is using this data directory: {e}") from None
    try:
        yield
    finally:
        lock.release()
