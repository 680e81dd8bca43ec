"""The configuration of one deployment: sizes, timing, storage and the application.

A :class:`DeploymentConfig` is plain data (pydantic v2, unknown fields rejected), so it
can be written to a JSON or TOML file, passed to :func:`pmmc_ray.deploy`, and stored
in the cluster for :func:`pmmc_ray.connect` to read back. Nothing here imports ray.
"""

from __future__ import annotations

import importlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core import Config, Timing

__all__ = ["KV_NAMESPACE", "ConfigFileError", "DeploymentConfig", "load_app_class"]

KV_NAMESPACE = "pmmc-ray"
"""Namespace of the deployment records kept in Ray's cluster key-value store."""

_TIMING_FIELDS = tuple(Timing.__dataclass_fields__)
"""Every core Timing field is also a DeploymentConfig field (a test checks it)."""


class ConfigFileError(ValueError):
    """A configuration file could not be read or is invalid; the message names the file."""


class DeploymentConfig(BaseModel):
    """How many processes of each role, their timing, where they store their state.

    Sizes: give ``f`` (tolerated crashes; replicas and leaders default to f+1,
    acceptors to 2f+1) or explicit ``replicas`` / ``leaders`` / ``acceptors`` counts.
    Timing fields are milliseconds and map one to one onto :class:`pmmc_ray.core.Timing`;
    the defaults suit a real network (they are slower than the simulator's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field("pmmc", pattern=r"^[a-z0-9-]+$", max_length=64)
    f: int = Field(1, ge=0)
    replicas: int | None = Field(None, ge=1)
    leaders: int | None = Field(None, ge=1)
    acceptors: int | None = Field(None, ge=1)

    window: int = Field(8, ge=1)
    max_batch: int = Field(1024, ge=1)
    max_inflight: int = Field(1, ge=1)
    replica_tick: int = Field(100, ge=1)
    retry: int = Field(50, ge=1)
    ping_interval: int = Field(50, ge=1)
    timeout_initial: int = Field(300, ge=1)
    timeout_min: int = Field(200, ge=1)
    timeout_max: int = Field(5000, ge=1)
    timeout_factor: float = Field(2.0, ge=1.0)
    timeout_decrease: int = Field(20, ge=0)
    scout_retry: int = Field(300, ge=1)
    retire_check: int = Field(1000, ge=1)
    keep_decisions: int = Field(1000, ge=1)
    snapshot_every: int = Field(1000, ge=1)
    state_chunk: int = Field(1 << 20, ge=1)
    max_sessions: int = Field(100_000, ge=1)
    max_entries_per_message: int = Field(256, ge=1)

    transport: Literal["stream", "ray"] = "stream"
    """How protocol messages travel between actors: ``stream`` (persistent authenticated
    TCP streams between the actors, with Ray calls while a stream is not up; see
    :mod:`pmmc_ray.runtime.dataplane`) or ``ray`` (one Ray actor call per message batch).
    Clients reach replicas through Ray calls either way."""

    data_dir: str = "~/.pmmc-ray/data"
    app: str = Field("pmmc_ray.app:KVStore", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    spread: bool = True
    """Place the members of each role on different Ray nodes when there are enough."""
    deployment_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    """Set by :func:`pmmc_ray.deploy` (a fresh uuid per deployment); ties each actor's
    storage file to the deployment that created it. Leave it unset."""

    @model_validator(mode="before")
    @classmethod
    def _fill_counts(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            f = data.get("f", 1)
            if isinstance(f, int) and not isinstance(f, bool) and f >= 0:
                data.setdefault("replicas", f + 1)
                data.setdefault("leaders", f + 1)
                data.setdefault("acceptors", 2 * f + 1)
                for k in ("replicas", "leaders", "acceptors"):
                    if data[k] is None:
                        data[k] = (2 * f + 1) if k == "acceptors" else f + 1
        return data

    @model_validator(mode="after")
    def _check_timing(self) -> DeploymentConfig:
        try:
            self.timing()
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self

    # --- derived values --------------------------------------------------------------

    def timing(self) -> Timing:
        """The core :class:`Timing` these fields describe."""
        return Timing(**{k: getattr(self, k) for k in _TIMING_FIELDS})

    def replica_ids(self) -> tuple[str, ...]:
        return tuple(f"replica-{i}" for i in range(self.replicas or 0))

    def leader_ids(self) -> tuple[str, ...]:
        return tuple(f"leader-{i}" for i in range(self.leaders or 0))

    def acceptor_ids(self) -> tuple[str, ...]:
        return tuple(f"acceptor-{i}" for i in range(self.acceptors or 0))

    def initial_config(self) -> Config:
        """Configuration epoch 0, which starts at slot 1."""
        return Config(0, 1, self.replica_ids(), self.leader_ids(), self.acceptor_ids())

    def storage_dir(self) -> Path:
        """``{data_dir}/{namespace}``, with ``~`` expanded."""
        return Path(os.path.expanduser(self.data_dir)) / self.namespace

    # --- files -----------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> DeploymentConfig:
        """Load a JSON (``.json``) or TOML (``.toml``) file; errors name the file and field.

        ``overrides`` (None values ignored) replace the file's fields before validation.
        """
        p = Path(path)
        data = cls.read_file(p)
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            lines = [
                f"{'.'.join(str(x) for x in err['loc']) or '<config>'}: {err['msg']}"
                for err in e.errors()
            ]
            raise ConfigFileError(f"{p}: invalid deployment config: " + "; ".join(lines)) from None

    @staticmethod
    def read_file(path: str | os.PathLike) -> dict[str, Any]:
        """The raw table of a JSON or TOML config file (not yet validated)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".json", ".toml"):
            raise ConfigFileError(f"{p}: unsupported config format {suffix!r}; use .json or .toml")
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise ConfigFileError(f"{p}: cannot read: {e.strerror or e}") from None
        try:
            data = tomllib.loads(raw.decode()) if suffix == ".toml" else json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigFileError(f"{p}: not valid {suffix[1:].upper()}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{p}: the top level must be a table/object")
        return data


def load_app_class(spec: str) -> type:
    """Import ``"module:Class"`` and return the class (the replicated state machine)."""
    module, _, name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load application {spec!r}: {e}") from None
    if not isinstance(cls, type):
        raise ValueError(f"application {spec!r} is not a class")
    return cls
