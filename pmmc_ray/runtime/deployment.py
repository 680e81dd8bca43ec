"""Create, re-attach, find, inspect, disturb and remove deployments on a Ray cluster.

A deployment is a set of detached, named actors in one Ray namespace (its name is the
deployment's ``namespace``): ``acceptor-i``, ``replica-i``, ``leader-i`` with its
``scout-i`` and ``commander-i``. Its :class:`DeploymentConfig` and members are stored
in the GCS key-value store, so :func:`connect` from any driver of the cluster can
rebuild a :class:`Deployment` handle by namespace alone, and in the data directory's
manifest (:mod:`.manifest`), so that :func:`deploy` re-attaches to the data after the
whole Ray cluster was stopped and started again (DESIGN 4b). Wiping data is always an
explicit act: :meth:`Deployment.shutdown` (``pmmc-ray down``) or ``deploy(fresh=True)``
(``pmmc-ray up --fresh``).

Ray authentication: when :func:`deploy` starts a local Ray itself it leaves Ray's
default, which in Ray 2.59+ is token authentication for new local clusters unless
``RAY_AUTH_MODE`` is set (``RAY_AUTH_MODE=disabled`` turns it off for a private test
cluster; see https://docs.ray.io/en/latest/ray-security/token-auth.html).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..core.ids import commander_of, role_of, scout_of
from . import placement
from .actors import ACTOR_CLASSES
from .client import AsyncClient, Client, HistoryRecorder
from .config import KV_NAMESPACE, DeploymentConfig, load_app_class
from .dataplane import secret_key
from .manifest import (
    DataDirError,
    Manifest,
    config_differences,
    deploy_lock,
    foreign_files,
    held_by,
    read_manifest,
    wipe,
    write_manifest,
)
from .mux import SubmitMux
from .threaded import ThreadedClient

__all__ = [
    "AlreadyDeployedError",
    "DataDirError",
    "Deployment",
    "NotDeployedError",
    "connect",
    "deploy",
]

log = logging.getLogger("pmmc_ray.runtime")

_KV_NAMESPACE = KV_NAMESPACE
_LOCK_GRACE_S = 5.0
_PLACEMENT_MEMORY = 1 << 20  # bytes of Ray's logical memory resource per placed actor


class AlreadyDeployedError(RuntimeError):
    """The namespace already has live actors."""


class NotDeployedError(LookupError):
    """No deployment is recorded under this namespace."""


def _kv_key(namespace: str) -> str:
    return f"deployment/{namespace}"


def _coerce(config: DeploymentConfig | dict | None) -> DeploymentConfig:
    if config is None:
        return DeploymentConfig()
    if isinstance(config, DeploymentConfig):
        return config
    if isinstance(config, dict):
        return DeploymentConfig.model_validate(config)
    raise TypeError(f"config must be a DeploymentConfig, a dict or None, not {type(config)}")


def _ensure_ray(namespace: str, address: str | None, *, start_local: bool) -> None:
    if ray.is_initialized():
        return
    if address is not None or not start_local:
        ray.init(address=address or "auto", namespace=namespace)
    else:
        ray.init(
            namespace=namespace,
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            ignore_reinit_error=True,
        )


def _live_actor_names(namespace: str) -> list[str]:
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == namespace
    )


def _alive_nodes() -> list[tuple[str, str]]:
    """(node id, address) of every alive node, in a stable order."""
    return sorted(
        ((n["NodeID"], n.get("NodeManagerAddress", "")) for n in ray.nodes() if n.get("Alive")),
        key=lambda x: (x[1], x[0]),
    )


def _holder() -> str:
    return f"pmmc-ray driver pid {os.getpid()} on {socket.gethostname()}"


def _init_prefix(namespace: str, deployment_id: str | None) -> str:
    return f"init/{namespace}/{deployment_id}/"


@dataclass
class Deployment:
    """A handle on a running deployment (cheap; rebuild it anywhere with :func:`connect`)."""

    config: DeploymentConfig
    notes: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    """Every actor ever created in this deployment (reconfiguration adds to it)."""
    joined: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Replicas added by reconfiguration -> the configurations they were created with."""
    placement: dict[str, str] = field(default_factory=dict)
    """member -> address of the node it last ran on (kept in the manifest)."""
    reattached: bool = False
    """True when :func:`deploy` re-attached to existing data instead of starting fresh."""
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def names(self) -> list[str]:
        """Every actor name, in creation order."""
        if self.members:
            return list(self.members)
        c = self.config
        out = [*c.acceptor_ids(), *c.replica_ids()]
        for lid in c.leader_ids():
            out += [scout_of(lid), commander_of(lid), lid]
        return out

    def _save(self) -> None:
        """Record config, notes and members in the cluster, for :func:`connect`, and in
        the data directory's manifest when this driver's node holds it."""
        internal_kv._internal_kv_put(
            _kv_key(self.namespace),
            json.dumps(
                {
                    "config": self.config.model_dump(),
                    "notes": self.notes,
                    "members": self.names(),
                    "joined": self.joined,
                    "placement": self.placement,
                }
            ),
            overwrite=True,
            namespace=_KV_NAMESPACE,
        )
        sdir = self.config.storage_dir()
        try:
            with deploy_lock(sdir, _holder()):
                man = read_manifest(sdir)
                if man is None or man.deployment_id != self.config.deployment_id:
                    return  # the manifest lives on the node that deployed; not this one
                man.members = self.names()
                man.joined = dict(self.joined)
                man.placement = dict(self.placement)
                man.config = self.config.model_dump(exclude={"deployment_id"})
                write_manifest(sdir, man)
        except (DataDirError, OSError) as e:
            log.warning("deployment %s: manifest not updated: %s", self.namespace, e)

    def configurations(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The configurations (epochs) known to the most advanced reachable replica."""
        best: list[dict[str, Any]] = []
        replicas = [n for n in self.names() if n.startswith("replica-")]
        for st in self._gather("configs", timeout_s, names=replicas).values():
            if "error" not in st and not st.get("recovering"):
                cfgs = st.get("configs") or []
                if len(cfgs) > len(best):
                    best = cfgs
        if not best:
            raise RuntimeError(f"deployment {self.namespace!r}: no replica with state answers")
        return best

    def replica_names(self) -> list[str]:
        """Replicas of the newest configuration (the initial ones if none answers)."""
        try:
            return list(self.configurations(timeout_s=2.0)[-1]["replicas"])
        except RuntimeError:
            return list(self.config.replica_ids())

    def reconfigure(
        self,
        *,
        replicas: list[str] | None = None,
        leaders: list[str] | None = None,
        acceptors: list[str] | None = None,
        timeout_s: float = 60.0,
    ) -> int:
        """Change the members through the log (paper: a reconfiguration command decided
        in slot s governs slots from s + WINDOW on). Names not yet in the deployment
        get new actors (a leader with its scout and commander; a replica that first
        recovers its state from a peer). Returns the new configuration's epoch once the
        command is decided. Removed members keep running: the old configuration's
        slots may still need them until they are all decided.
        """
        from ..core import Reconfigure

        configs = self.configurations()
        cur = configs[-1]
        new = {
            "replica": list(replicas if replicas is not None else cur["replicas"]),
            "leader": list(leaders if leaders is not None else cur["leaders"]),
            "acceptor": list(acceptors if acceptors is not None else cur["acceptors"]),
        }
        for role, names in new.items():
            if not names or len(set(names)) != len(names):
                raise ValueError(f"reconfigure: {role}s must be distinct and not empty")
            for n in names:
                if not n.startswith(f"{role}-") or not n.removeprefix(f"{role}-").isdigit():
                    raise ValueError(f"reconfigure: {n!r} is not a valid {role} name ({role}-N)")
        created: list[str] = []
        for role, names in (("acceptor", new["acceptor"]), ("leader", new["leader"])):
            for n in names:
                if n in self.names():
                    continue
                created += [n] if role == "acceptor" else [scout_of(n), commander_of(n), n]
        for n in new["replica"]:
            if n not in self.names():
                created.append(n)
                self.joined[n] = configs
        where = self._plan([*self.names(), *created])
        for n in created:
            self._start(n, where.get(n))
        self.members = self.names() + created
        self._save()
        self.wait_ready(timeout_s, names=created)
        self._record_placement(created)
        # Every member opens its streams to the others now (the new members are not in
        # the initial configuration the actors warmed their streams for at start).
        self._gather("warm_links", 5.0, list(self.members))
        op = Reconfigure(tuple(new["replica"]), tuple(new["leader"]), tuple(new["acceptor"]))
        client = Client(self.config, timeout_s=timeout_s, replicas=list(cur["replicas"]))
        return int(client.execute(op))

    def replace(self, name: str, timeout_s: float = 60.0) -> str:
        """Replace one replica, leader or acceptor by a new actor; returns its name."""
        role = name.split("-", 1)[0]
        if role not in ("replica", "leader", "acceptor"):
            raise ValueError(f"only replicas, leaders and acceptors can be replaced, not {name!r}")
        cur = self.configurations()[-1]
        key = role + "s"
        if name not in cur[key]:
            raise ValueError(f"{name!r} is not a {role} of the current configuration")
        used = [int(n.split("-", 1)[1]) for n in self.names() if n.startswith(f"{role}-")]
        fresh = f"{role}-{max(used) + 1}"
        members = [fresh if n == name else n for n in cur[key]]
        self.reconfigure(**{key: members}, timeout_s=timeout_s)
        return fresh

    def _actor_options(self) -> dict[str, Any]:
        return dict(
            namespace=self.namespace,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
        )

    def _plan(self, names: list[str]) -> dict[str, str]:
        """member -> node id to place it on (see :mod:`.placement`)."""
        if not self.config.spread:
            return {}
        return placement.plan(names, _alive_nodes(), self.placement)

    def _start(self, name: str, node_id: str | None) -> None:
        """Create the actor ``name`` (on ``node_id`` if given, softly: if that node
        cannot take it, Ray places it elsewhere)."""
        role = role_of(name)
        opts = self._actor_options()
        if node_id is not None:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
            # Ray ignores a soft node affinity when an actor asks for no resources at all
            # (it picks a random node; see ray-project/ray#25360): ask for a token of the
            # logical memory resource, which every node has, so the placement holds.
            opts["memory"] = _PLACEMENT_MEMORY
        if role == "replica":
            # Every waiting client holds one call slot on its replica; leave room.
            opts["max_concurrency"] = 10_000
        args: tuple = (name, self.config.model_dump())
        if role == "replica" and name in self.joined:
            args += (self.joined[name],)
        self._handles[name] = ACTOR_CLASSES[role].options(name=name, **opts).remote(*args)

    def _record_placement(self, names: list[str]) -> None:
        """Remember which node address each of ``names`` runs on (for re-attaching)."""
        for n, w in self._gather("where", 10.0, names=names).items():
            if isinstance(w, dict) and w.get("node_ip"):
                self.placement[n] = w["node_ip"]
        self._save()

    def handle(self, name: str) -> Any:
        """The actor handle of ``name`` (raises ValueError if it does not exist)."""
        h = self._handles.get(name)
        if h is None:
            if name not in self.names():
                raise ValueError(f"{name!r} is not an actor of deployment {self.namespace!r}")
            h = ray.get_actor(name, namespace=self.namespace)
            self._handles[name] = h
        return h

    def actors(self) -> dict[str, Any]:
        """name -> actor handle, for every actor that can be found."""
        out: dict[str, Any] = {}
        for n in self.names():
            try:
                out[n] = self.handle(n)
            except ValueError:
                pass
        return out

    def _gather(
        self, method: str, timeout_s: float, *args: Any, names: list[str] | None = None
    ) -> dict[str, Any]:
        """Call ``method`` on every actor (or ``names``); name -> result, or
        {"state": ..., "error": ...}."""
        refs: dict[str, Any] = {}
        out: dict[str, Any] = {}
        names = self.names() if names is None else names
        for n in names:
            try:
                refs[n] = getattr(self.handle(n), method).remote(*args)
            except Exception as e:
                out[n] = {"name": n, "state": "missing", "error": f"{type(e).__name__}: {e}"}
        if refs:
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        for n, ref in refs.items():
            try:
                out[n] = ray.get(ref, timeout=0.01)
            except ray.exceptions.GetTimeoutError:
                out[n] = {"name": n, "state": "unreachable", "error": f"no answer in {timeout_s}s"}
            except Exception as e:
                out[n] = {"name": n, "state": "dead", "error": f"{type(e).__name__}: {e}"[:300]}
        return {n: out[n] for n in names}

    def status(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Every actor's ``status()`` (dead or silent actors reported as such)."""
        return {
            "namespace": self.namespace,
            "config": self.config.model_dump(),
            "notes": list(self.notes),
            "actors": self._gather("status", timeout_s),
        }

    def wait_ready(self, timeout_s: float = 120.0, names: list[str] | None = None) -> None:
        """Block until every actor (or those in ``names``) answers ``ping``."""
        deadline = time.monotonic() + timeout_s
        pending = set(self.names() if names is None else names)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"deployment {self.namespace!r}: not ready after {timeout_s}s: "
                    f"{sorted(pending)}"
                )
            refs = {self.handle(n).ping.remote(): n for n in pending}
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=min(left, 10.0))
            for r in ready:
                try:
                    if ray.get(r) == "pong":
                        pending.discard(refs[r])
                except ray.exceptions.RayActorError as e:
                    if not isinstance(e, ray.exceptions.ActorUnavailableError):
                        raise RuntimeError(f"actor {refs[r]} died while starting: {e}") from None
                except Exception:
                    pass
            if pending:
                time.sleep(0.1)

    def client(
        self,
        timeout_s: float = 10.0,
        *,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_id: str | None = None,
    ) -> Client:
        """A blocking client of this deployment (talking to the current replicas)."""
        return self._make_client(Client, timeout_s, attempt_timeout_s, recorder, client_id)

    def async_client(
        self,
        timeout_s: float = 10.0,
        *,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_id: str | None = None,
        mux: SubmitMux | None = None,
    ) -> AsyncClient:
        """An asyncio client of this deployment (talking to the current replicas).
        Clients of one event loop that share ``mux`` send their commands together."""
        return self._make_client(
            AsyncClient, timeout_s, attempt_timeout_s, recorder, client_id, mux=mux
        )

    def muxed_clients(
        self,
        n: int,
        mux: SubmitMux,
        *,
        client_prefix: str,
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
    ) -> list[AsyncClient]:
        """``n`` asyncio clients sharing ``mux`` (and the replica handles, looked up once
        here, not by each client on the event loop), named ``{client_prefix}{i}``."""
        names = self.replica_names()
        handles = {name: self.handle(name) for name in names}
        return [
            AsyncClient(
                self.config,
                timeout_s=timeout_s,
                attempt_timeout_s=attempt_timeout_s,
                recorder=recorder,
                client_id=f"{client_prefix}{i}",
                replicas=names,
                handles=handles,
                mux=mux,
            )
            for i in range(n)
        ]

    def threaded_client(
        self,
        sessions: int = 64,
        *,
        timeout_s: float = 10.0,
        attempt_timeout_s: float = 1.5,
        recorder: HistoryRecorder | None = None,
        client_prefix: str = "threaded-",
    ) -> ThreadedClient:
        """A blocking client that any number of threads may share, with up to
        ``sessions`` operations in flight: each runs on one of a pool of paper clients
        (one session each), on a background event loop whose commands to a replica
        travel together through one :class:`SubmitMux`. The replica handles are looked
        up here, once, not on that loop. Call ``close()`` (or use it in a ``with``
        block) to stop its thread. See :mod:`pmmc_ray.runtime.threaded` for what
        happens to an operation whose outcome is unknown."""
        names = self.replica_names()
        handles = {name: self.handle(name) for name in names}
        return ThreadedClient(
            self.config,
            sessions=sessions,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            recorder=recorder,
            client_prefix=client_prefix,
            replicas=names,
            handles=handles,
        )

    def _make_client(
        self,
        cls: type,
        timeout_s: float,
        attempt_timeout_s: float,
        recorder: HistoryRecorder | None,
        client_id: str | None,
        **extra: Any,
    ) -> Any:
        return cls(
            self.config,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            recorder=recorder,
            client_id=client_id,
            replicas=self.replica_names() if self.members else None,
            **extra,
        )

    def set_faults(
        self,
        drop: float = 0.0,
        delay_ms: int = 0,
        duplicate: float = 0.0,
        blocked: list | tuple = (),
        *,
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """Inject faults on every actor's outgoing messages (no arguments: turn them off)."""
        blocked = [list(p) for p in blocked]
        return self._gather("set_faults", timeout_s, drop, delay_ms, duplicate, blocked)

    def cut_links(
        self,
        names: list[str] | None = None,
        peers: list[str] | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """Reset the data-plane streams of ``names`` (every actor if None) to and from
        ``peers`` (all if None): a cut connection, as a network fault. Buffered frames
        are lost (the protocol retransmits); the streams reconnect with backoff, and
        messages go by Ray call meanwhile. Name -> the peers whose streams it cut."""
        known = set(self.names())
        for n in [*(names or []), *(peers or [])]:
            if n not in known:
                raise ValueError(f"no actor named {n!r} in deployment {self.namespace}")
        return self._gather("cut_links", timeout_s, peers, names=names)

    def kill(self, name: str, restart: bool = True) -> None:
        """Kill actor ``name`` (Ray restarts it if ``restart``). Asynchronous, as ray.kill is."""
        ray.kill(self.handle(name), no_restart=not restart)
        if not restart:
            self._handles.pop(name, None)

    def _abort(self, delete_data: bool) -> None:
        """Undo a failed deploy: kill only the actors this call created (a racing deploy
        of the same namespace may own the names); a new deployment's actors first delete
        the files they created (nothing was ever acknowledged from them)."""
        if delete_data and self._handles:
            try:
                self._gather("destroy_storage", 5.0, names=list(self._handles))
            except Exception:
                pass
        for h in self._handles.values():
            try:
                ray.kill(h, no_restart=True)
            except Exception:
                pass
        self._handles.clear()
        try:
            raw = internal_kv._internal_kv_get(_kv_key(self.namespace), namespace=_KV_NAMESPACE)
            if raw is not None and json.loads(raw)["config"].get("deployment_id") == (
                self.config.deployment_id
            ):
                internal_kv._internal_kv_del(_kv_key(self.namespace), namespace=_KV_NAMESPACE)
            internal_kv._internal_kv_del(
                _init_prefix(self.namespace, self.config.deployment_id),
                del_by_prefix=True,
                namespace=_KV_NAMESPACE,
            )
            internal_kv._internal_kv_del(
                secret_key(self.namespace, self.config.deployment_id), namespace=_KV_NAMESPACE
            )
        except Exception:
            pass

    def shutdown(self, delete_data: bool = True) -> None:
        """Kill every actor for good and forget the deployment in the cluster.

        ``delete_data`` (the default) also deletes its data: each actor deletes its own
        files (they may be on other nodes), then the data directory on this node goes.
        With ``delete_data=False`` the data and the manifest stay, and a later
        :func:`deploy` with the same namespace and data directory re-attaches to them.
        """
        if delete_data:
            self._gather("destroy_storage", 5.0)
        for n in self.names():
            try:
                ray.kill(self.handle(n), no_restart=True)
            except Exception:
                pass
        self._handles.clear()
        try:
            internal_kv._internal_kv_del(_kv_key(self.namespace), namespace=_KV_NAMESPACE)
            internal_kv._internal_kv_del(
                f"init/{self.namespace}/", del_by_prefix=True, namespace=_KV_NAMESPACE
            )
            internal_kv._internal_kv_del(
                secret_key(self.namespace, self.config.deployment_id), namespace=_KV_NAMESPACE
            )
        except Exception:
            log.warning("could not remove the stored config of %s", self.namespace)
        if delete_data:
            shutil.rmtree(self.config.storage_dir(), ignore_errors=True)


def deploy(
    config: DeploymentConfig | dict | None = None,
    *,
    ray_address: str | None = None,
    ready_timeout_s: float = 180.0,
    fresh: bool = False,
) -> Deployment:
    """Start a deployment, or re-attach to its data, and wait until every actor answers.

    The data directory is ``{data_dir}/{namespace}`` on this node:

    - it holds this namespace's manifest (``deployment.json``, left by an earlier
      deploy whose Ray cluster was stopped, or by ``shutdown(delete_data=False)``):
      re-attach. Same deployment id and members; every actor reloads its own log, so
      every acknowledged write is there. ``replicas``, ``leaders``, ``acceptors``,
      ``app`` and ``window`` must match the stored config; timing fields may change.
    - it is empty or absent: a new deployment (a fresh id), and a new manifest.
    - ``fresh=True``: delete whatever is there first (explicitly starting over).

    Refused with :class:`DataDirError`, changing nothing: a directory whose locks are
    held by live processes (another Ray cluster on this host deploying the same
    namespace, say), files without a manifest (another tool's, or an older format), a
    manifest this version cannot read, or a config that does not match the data.

    Starts a local Ray (``num_cpus=os.cpu_count()``, no dashboard) if Ray is not
    initialized and ``ray_address`` is None; connects to ``ray_address`` otherwise.
    Raises :class:`AlreadyDeployedError` if the namespace already has live actors.
    """
    cfg = _coerce(config)
    load_app_class(cfg.app)  # fail here, clearly, rather than in every actor
    _ensure_ray(cfg.namespace, ray_address, start_local=True)
    ns = cfg.namespace
    live = _live_actor_names(ns)
    if live:
        raise AlreadyDeployedError(
            f"namespace {ns!r} already deployed ({len(live)} live actors, e.g. {live[0]}); "
            "use connect() or shut it down first"
        )
    sdir = cfg.storage_dir()
    with deploy_lock(sdir, _holder()):
        busy = held_by(sdir)
        deadline = time.monotonic() + _LOCK_GRACE_S
        while busy and time.monotonic() < deadline:
            time.sleep(0.25)  # processes of a cluster that was just stopped may be exiting
            busy = held_by(sdir)
        if busy:
            raise DataDirError(
                f"{sdir} is in use by live processes (another Ray cluster deploying "
                f"namespace {ns!r} on this host?): {'; '.join(busy[:3])}; nothing was changed"
            )
        if fresh:
            wipe(sdir)
        man = read_manifest(sdir)
        if man is None:
            leftovers = foreign_files(sdir)
            if leftovers:
                raise DataDirError(
                    f"{sdir} holds files but no {ns!r} deployment manifest (another tool's "
                    f"data, or an older pmmc-ray format): {', '.join(leftovers[:5])}; nothing "
                    "was changed. Choose another data_dir or namespace, or wipe it with "
                    "fresh=True (pmmc-ray up --fresh)"
                )
            cfg = cfg.model_copy(update={"deployment_id": uuid.uuid4().hex})
            man = Manifest(
                ns, str(cfg.deployment_id), cfg.model_dump(exclude={"deployment_id"}), []
            )
            dep = Deployment(cfg)
            dep.members = dep.names()
            man.members = dep.members
            write_manifest(sdir, man)
        else:
            dep = _reattach(cfg, man, sdir)
        n_nodes = len(_alive_nodes())
        counts = {r: 0 for r in ("acceptor", "replica", "leader")}
        for n in dep.names():
            if role_of(n) in counts:
                counts[role_of(n)] += 1
        if cfg.spread:
            for note in placement.spread_warnings(counts, n_nodes):
                dep.notes.append(note)
                log.warning("deployment %s: %s", ns, note)
        try:
            where = dep._plan(dep.names())
            for name in dep.names():
                dep._start(name, where.get(name))
            dep.wait_ready(ready_timeout_s)
        except BaseException:
            dep._abort(delete_data=not dep.reattached)
            if not dep.reattached:
                wipe(sdir)
            raise
        man.state = "ready"
        man.members = dep.names()
        write_manifest(sdir, man)
    dep._record_placement(dep.names())  # also saves the record for connect()
    return dep


def _reattach(cfg: DeploymentConfig, man: Manifest, sdir: Any) -> Deployment:
    """A Deployment handle on the existing data described by ``man``."""
    ns = cfg.namespace
    if man.namespace != ns:
        raise DataDirError(
            f"{sdir} holds namespace {man.namespace!r}, not {ns!r}; nothing was changed"
        )
    diffs = config_differences(man.config, cfg)
    if diffs:
        raise DataDirError(
            f"{sdir} holds deployment {man.deployment_id} with another shape: "
            + "; ".join(diffs)
            + ". Deploy it with the same config, or wipe it with fresh=True "
            "(pmmc-ray up --fresh); nothing was changed"
        )
    cfg = cfg.model_copy(update={"deployment_id": man.deployment_id})
    dep = Deployment(
        cfg,
        members=list(man.members),
        joined=dict(man.joined),
        placement=dict(man.placement),
        reattached=True,
    )
    dep.notes.append(
        f"re-attached to the data of deployment {man.deployment_id} in {sdir} "
        f"({len(man.members)} members)"
    )
    if man.state == "ready":
        # Every member created its log before this deployment first became ready: a
        # member that finds no log now has lost it (an acceptor must then refuse).
        for name in man.members:
            internal_kv._internal_kv_put(
                _init_prefix(ns, man.deployment_id) + name,
                b"1",
                overwrite=True,
                namespace=_KV_NAMESPACE,
            )
    log.warning("deployment %s: %s", ns, dep.notes[-1])
    return dep


def connect(namespace: str, *, address: str | None = None) -> Deployment:
    """A :class:`Deployment` handle for the deployment running under ``namespace``.

    Connects this process to Ray (``address``, default "auto") if it is not yet.
    """
    _ensure_ray(namespace, address, start_local=False)
    raw = internal_kv._internal_kv_get(_kv_key(namespace), namespace=_KV_NAMESPACE)
    if raw is None:
        raise NotDeployedError(
            f"no deployment named {namespace!r} in this Ray cluster; if its data survived a "
            f"cluster restart, re-attach with deploy() or pmmc-ray up --namespace {namespace} "
            "and the same data_dir"
        )
    data = json.loads(raw)
    dep = Deployment(
        DeploymentConfig.model_validate(data["config"]),
        list(data.get("notes", [])),
        list(data.get("members", [])),
        dict(data.get("joined", {})),
        dict(data.get("placement", {})),
    )
    if not _live_actor_names(namespace):
        raise NotDeployedError(f"deployment {namespace!r} is recorded but has no live actors")
    return dep


def start_local_ray(namespace: str, num_cpus: int | None = None) -> None:
    """Start an embedded single-machine Ray for this process (no dashboard), even if
    another Ray runs on this machine (``address="local"``)."""
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
    )


def stop_ray() -> None:
    """Disconnect from Ray, stopping it if this process started it."""
    ray.shutdown()
