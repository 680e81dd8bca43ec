"""Create, find, inspect, disturb and remove deployments on a Ray cluster.

A deployment is a set of detached, named actors in one Ray namespace (its name is the
deployment's ``namespace``): ``acceptor-i``, ``replica-i``, ``leader-i`` with its
``scout-i`` and ``commander-i``. Its :class:`DeploymentConfig` is stored in the GCS
key-value store, so :func:`connect` from any driver of the cluster can rebuild a
:class:`Deployment` handle by namespace alone.

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
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..core.ids import commander_of, scout_of
from .actors import ACTOR_CLASSES
from .client import AsyncClient, Client, HistoryRecorder
from .config import KV_NAMESPACE, DeploymentConfig, load_app_class

__all__ = [
    "AlreadyDeployedError",
    "Deployment",
    "NotDeployedError",
    "connect",
    "deploy",
]

log = logging.getLogger("pmmc_ray.runtime")

_KV_NAMESPACE = KV_NAMESPACE


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


def _alive_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))


@dataclass
class Deployment:
    """A handle on a running deployment (cheap; rebuild it anywhere with :func:`connect`)."""

    config: DeploymentConfig
    notes: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    """Every actor ever created in this deployment (reconfiguration adds to it)."""
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
        """Record config, notes and members in the cluster, for :func:`connect`."""
        internal_kv._internal_kv_put(
            _kv_key(self.namespace),
            json.dumps(
                {"config": self.config.model_dump(), "notes": self.notes, "members": self.names()}
            ),
            overwrite=True,
            namespace=_KV_NAMESPACE,
        )

    def configurations(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The configurations (epochs) known to the most advanced reachable replica."""
        best: list[dict[str, Any]] = []
        replicas = [n for n in self.names() if n.startswith("replica-")]
        for st in self._gather("status", timeout_s, names=replicas).values():
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
        opts = self._actor_options()
        dump = self.config.model_dump()
        created: list[str] = []
        for role, names in (("acceptor", new["acceptor"]), ("leader", new["leader"])):
            for n in names:
                if n in self.names():
                    continue
                group = [n] if role == "acceptor" else [scout_of(n), commander_of(n), n]
                for g in group:
                    cls = ACTOR_CLASSES[g.split("-", 1)[0]]
                    self._handles[g] = cls.options(name=g, **opts).remote(g, dump)
                    created.append(g)
        for n in new["replica"]:
            if n not in self.names():
                cls = ACTOR_CLASSES["replica"]
                self._handles[n] = cls.options(name=n, max_concurrency=10_000, **opts).remote(
                    n, dump, configs
                )
                created.append(n)
        self.members = self.names() + created
        self._save()
        self.wait_ready(timeout_s, names=created)
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
    ) -> AsyncClient:
        """An asyncio client of this deployment (talking to the current replicas)."""
        return self._make_client(AsyncClient, timeout_s, attempt_timeout_s, recorder, client_id)

    def _make_client(
        self,
        cls: type,
        timeout_s: float,
        attempt_timeout_s: float,
        recorder: HistoryRecorder | None,
        client_id: str | None,
    ) -> Any:
        return cls(
            self.config,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            recorder=recorder,
            client_id=client_id,
            replicas=self.replica_names() if self.members else None,
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

    def kill(self, name: str, restart: bool = True) -> None:
        """Kill actor ``name`` (Ray restarts it if ``restart``). Asynchronous, as ray.kill is."""
        ray.kill(self.handle(name), no_restart=not restart)
        if not restart:
            self._handles.pop(name, None)

    def _abort(self) -> None:
        """Undo a failed deploy: kill only the actors this call created (a racing deploy
        of the same namespace may own the names), and leave the stored config alone
        unless it is ours."""
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
        except Exception:
            pass

    def shutdown(self, delete_data: bool = True) -> None:
        """Kill every actor for good, forget the deployment, and delete its data."""
        if delete_data:
            # Each actor deletes its own file (it may be on another node).
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
        except Exception:
            log.warning("could not remove the stored config of %s", self.namespace)
        if delete_data:
            shutil.rmtree(self.config.storage_dir(), ignore_errors=True)


def deploy(
    config: DeploymentConfig | dict | None = None,
    *,
    ray_address: str | None = None,
    ready_timeout_s: float = 180.0,
) -> Deployment:
    """Create every actor of a deployment and wait until all answer ``ping``.

    Starts a local Ray (``num_cpus=os.cpu_count()``, no dashboard) if Ray is not
    initialized and ``ray_address`` is None; connects to ``ray_address`` otherwise.
    Raises :class:`AlreadyDeployedError` if the namespace already has live actors.
    """
    cfg = _coerce(config)
    load_app_class(cfg.app)  # fail here, clearly, rather than in every actor
    cfg = cfg.model_copy(update={"deployment_id": uuid.uuid4().hex})
    _ensure_ray(cfg.namespace, ray_address, start_local=True)
    ns = cfg.namespace
    live = _live_actor_names(ns)
    if live:
        raise AlreadyDeployedError(
            f"namespace {ns!r} already deployed ({len(live)} live actors, e.g. {live[0]}); "
            "use connect() or shut it down first"
        )
    dep = Deployment(cfg)
    nodes = _alive_nodes()
    n_acc = len(cfg.acceptor_ids())
    spread = cfg.spread_acceptors and len(nodes) > 1
    if cfg.spread_acceptors and len(nodes) < n_acc:
        note = (
            f"only {len(nodes)} alive node(s) for {n_acc} acceptors: a node failure can take "
            "down more than one acceptor"
        )
        dep.notes.append(note)
        log.warning("deployment %s: %s", ns, note)
    if os.path.isdir(cfg.storage_dir()) and os.listdir(cfg.storage_dir()):
        note = f"discarding stale data of a dead deployment in {cfg.storage_dir()}"
        dep.notes.append(note)
        log.warning("deployment %s: %s", ns, note)
    dump = cfg.model_dump()
    dep.members = dep.names()
    dep._save()
    opts = dep._actor_options()
    try:
        for i, name in enumerate(cfg.acceptor_ids()):
            extra: dict[str, Any] = {}
            if spread:
                node = nodes[i % len(nodes)]
                extra["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
            dep._handles[name] = (
                ACTOR_CLASSES["acceptor"].options(name=name, **opts, **extra).remote(name, dump)
            )
        for name in cfg.replica_ids():
            # Every waiting client holds one call slot on its replica; leave room.
            dep._handles[name] = (
                ACTOR_CLASSES["replica"]
                .options(name=name, max_concurrency=10_000, **opts)
                .remote(name, dump)
            )
        for lid in cfg.leader_ids():
            for role, name in (("scout", scout_of(lid)), ("commander", commander_of(lid))):
                dep._handles[name] = (
                    ACTOR_CLASSES[role].options(name=name, **opts).remote(name, dump)
                )
            dep._handles[lid] = ACTOR_CLASSES["leader"].options(name=lid, **opts).remote(lid, dump)
        dep.wait_ready(ready_timeout_s)
    except BaseException:
        dep._abort()
        raise
    return dep


def connect(namespace: str, *, address: str | None = None) -> Deployment:
    """A :class:`Deployment` handle for the deployment running under ``namespace``.

    Connects this process to Ray (``address``, default "auto") if it is not yet.
    """
    _ensure_ray(namespace, address, start_local=False)
    raw = internal_kv._internal_kv_get(_kv_key(namespace), namespace=_KV_NAMESPACE)
    if raw is None:
        raise NotDeployedError(f"no deployment named {namespace!r} in this Ray cluster")
    data = json.loads(raw)
    dep = Deployment(
        DeploymentConfig.model_validate(data["config"]),
        list(data.get("notes", [])),
        list(data.get("members", [])),
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
