"""``pmmc-ray loadtest``: start what is needed, run Locust headless, check the history.

:func:`run_loadtest` with a :class:`LoadTestPlan`:

1. without an address, starts an embedded local Ray, deploys a fresh f=1 deployment
   and (for HTTP users) a gateway on 127.0.0.1 at a free port; with one, connects to
   the deployment and uses the gateway of this node (``pmmc-ray gateway start``);
2. runs Locust headless with the files in ``loadtest/`` (``locustfile.py`` for HTTP
   users, ``native.py`` for native-client users, a shape file if asked), standalone or
   as a master with N worker processes (local, or placed on the cluster's nodes
   through Ray with ``workers_via_ray``), writing Locust's CSV and HTML reports, its
   logs and the recorded history into the results folder;
3. meanwhile measures the CPU time of each group of processes (Locust, sidecars,
   gateway, the deployment's actors, the rest of the machine), to say what limits
   the throughput;
4. reads Locust's totals, checks the history for linearizability (and that it is
   complete: every worker delivered all of its operations), and in embedded mode
   checks that the replicas ended with identical state; then tears down what it
   started, whatever happened: every Locust process, every worker placed by Ray (and
   its folder), the gateway, the deployment and the embedded Ray. The result is a
   dict (also written to ``summary.json``).

It prints nothing; ``progress`` gets one line at a time. Ray is imported only when a
test runs, so checking a plan stays cheap.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .loadgen import KEY_DISTRIBUTIONS, MIXES, check_histories, read_locust_stats

__all__ = ["LoadTestPlan", "default_loadtest_dir", "free_port", "run_loadtest"]

CLIENT_KINDS = ("http", "native")
SHAPES = ("step", "spike")


def default_loadtest_dir() -> Path:
    """``loadtest/`` of the source checkout this package runs from (or of the cwd)."""
    here = Path(__file__).resolve().parents[2] / "loadtest"
    return here if (here / "locustfile.py").exists() else Path.cwd() / "loadtest"


@dataclass
class LoadTestPlan:
    """What to run (see ``pmmc-ray loadtest --help`` for each field)."""

    users: int = 50
    duration_s: float = 60.0
    spawn_rate: float | None = None  # None: all users within about a second
    mix: str = "mixed"
    keys: int = 1000
    key_dist: str = "uniform"
    zipf_s: float = 0.99
    value_size: int = 16
    clients: tuple[str, ...] = ("http",)
    shape: str | None = None
    workers: int = 0
    workers_via_ray: bool = False  # place the workers on the cluster's nodes through Ray
    results_dir: Path | None = None
    address: str | None = None  # None: embedded Ray and a fresh deployment
    namespace: str | None = None
    gateway_url: str | None = None
    f: int = 1
    num_cpus: int | None = None
    check: bool = True
    skew_s: float = 0.0
    lincheck_timeout_s: float = 300.0
    loadtest_dir: Path = field(default_factory=default_loadtest_dir)

    def validate(self) -> None:
        if self.users < 1 or self.duration_s <= 0:
            raise ValueError("--users must be >= 1 and --duration > 0")
        if self.spawn_rate is not None and self.spawn_rate <= 0:
            raise ValueError("--spawn-rate must be > 0")
        if self.mix not in MIXES:
            raise ValueError(f"--mix must be one of {sorted(MIXES)}")
        if self.key_dist not in KEY_DISTRIBUTIONS or self.keys < 1:
            raise ValueError(f"--key-dist must be one of {KEY_DISTRIBUTIONS}, --keys >= 1")
        if not 1 <= self.value_size <= 1024 * 1024:
            raise ValueError("--value-size must be 1..1048576")
        if not self.clients or set(self.clients) - set(CLIENT_KINDS):
            raise ValueError(f"--client must be a comma list of {CLIENT_KINDS}")
        if self.shape is not None and self.shape not in SHAPES:
            raise ValueError(f"--shape must be one of {SHAPES}")
        if self.workers < 0 or self.skew_s < 0:
            raise ValueError("--workers and --clock-skew-ms must be >= 0")
        if self.workers_via_ray and not self.workers:
            raise ValueError("--workers-via-ray needs --workers N")
        if self.address is not None and not self.namespace:
            raise ValueError("--address needs --namespace (the deployment to load)")
        if not (self.loadtest_dir / "locustfile.py").exists():
            raise ValueError(
                f"no Locust files in {self.loadtest_dir}: run from a checkout of pmmc-ray "
                "or pass --locust-dir"
            )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocustCommands:
    """How to run Locust for a plan: the files, the standalone/master command line, and
    the arguments of each worker (after ``-f <files>``)."""

    files: list[Path]
    main: list[str]
    worker_args: list[str]

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", ",".join(map(str, self.files))] + (
            self.worker_args
        )


def locust_commands(
    plan: LoadTestPlan,
    out: Path,
    run_id: str,
    host: str | None,
    ray_address: str,
    namespace: str,
    master_host: str = "127.0.0.1",
) -> LocustCommands:
    """The Locust command lines of ``plan``; workers connect to ``master_host``."""
    d = plan.loadtest_dir
    files = [d / "locustfile.py"] if "http" in plan.clients else []
    if "native" in plan.clients:
        files.append(d / "native.py")
    shape = [d / f"shape_{plan.shape}.py"] if plan.shape else []
    classes = [{"http": "HttpKVUser", "native": "NativeKVUser"}[c] for c in plan.clients]
    kv = [
        f"--kv-mix={plan.mix}",
        f"--kv-keys={plan.keys}",
        f"--kv-key-dist={plan.key_dist}",
        f"--kv-zipf-s={plan.zipf_s}",
        f"--kv-value-size={plan.value_size}",
        f"--kv-history-dir={out}",
        f"--kv-run-id={run_id}",
        f"--kv-namespace={namespace}",
        f"--kv-ray-address={ray_address}",
    ]
    spawn_rate = plan.spawn_rate or float(plan.users)
    main = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(f) for f in files + shape),
        "--headless",
        f"--users={plan.users}",
        f"--spawn-rate={spawn_rate:g}",
        f"--run-time={max(1, round(plan.duration_s))}s",
        f"--csv={out / 'locust'}",
        f"--html={out / 'report.html'}",
        "--only-summary",
        *kv,
    ]
    if host:
        main.append(f"--host={host}")
    worker_args: list[str] = []
    if plan.workers:
        port = free_port()
        main += [
            "--master",
            f"--master-bind-host={master_host}",
            f"--master-bind-port={port}",
            f"--expect-workers={plan.workers}",
            "--expect-workers-max-wait=120",
        ]
        worker_args = [
            "--worker",
            f"--master-host={master_host}",
            f"--master-port={port}",
            *kv,
            *classes,
        ]
    main += classes
    return LocustCommands(files, main, worker_args)


class _CpuMeter:
    """CPU seconds used by groups of processes between ``start`` and ``stop``.

    Processes added to a group are sampled (the last sample counts for one that has
    exited). The Locust processes this process started are its children: their exact
    total, with that of their own reaped children (their sidecars), comes from
    ``getrusage(RUSAGE_CHILDREN)``, less the sampled CPU of those sidecars (added with
    ``in_children=True``). Locust workers placed by Ray on this node are children of
    an actor, not ours: they and their sidecars count as sampled.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._machine0: Any = None
        self._children0 = 0.0
        self._first: dict[int, tuple[str, float]] = {}
        self._last: dict[int, float] = {}
        self._in_children: set[int] = set()

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except (psutil.Error, OSError):
            return None

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def add(self, group: str, pid: int, in_children: bool = False) -> None:
        """Sample ``pid`` in ``group``; ``in_children``: it is a descendant of our Locust
        processes, so its CPU is also in their ``RUSAGE_CHILDREN`` total."""
        if pid not in self._first:
            c = self._cpu(pid)
            if c is not None:
                self._first[pid] = (group, c)
                self._last[pid] = c
                if in_children:
                    self._in_children.add(pid)

    def sample(self) -> None:
        for pid in self._first:
            c = self._cpu(pid)
            if c is not None:
                self._last[pid] = c

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = psutil.cpu_times()
        self._children0 = self._children()

    def stop(self) -> dict[str, Any]:
        """Call after the Locust processes have been waited for."""
        self.sample()
        wall = time.monotonic() - self._t0
        used: dict[str, float] = {}
        within = 0.0  # sampled CPU that RUSAGE_CHILDREN counts too
        for pid, (group, c0) in self._first.items():
            cpu = max(0.0, self._last[pid] - c0)
            used[group] = used.get(group, 0.0) + cpu
            if pid in self._in_children:
                within += cpu
        children = self._children() - self._children0
        used["locust"] = used.get("locust", 0.0) + max(0.0, children - within)
        m0, m1 = self._machine0, psutil.cpu_times()

        def busy(t: Any) -> float:
            return sum(t) - t.idle - getattr(t, "iowait", 0.0)

        cores = psutil.cpu_count() or 1
        out = {g: round(s, 1) for g, s in sorted(used.items())}
        machine = busy(m1) - busy(m0)
        out["other"] = round(max(0.0, machine - sum(used.values())), 1)
        out["machine_busy"] = round(machine, 1)
        return {
            "wall_s": round(wall, 1),
            "cores": cores,
            "cpu_s": out,
            "share_of_machine": {g: round(s / (wall * cores), 3) for g, s in out.items()},
        }


def _local_actor_pids(dep: Any) -> dict[str, int]:
    """pid of each actor of the deployment that runs on this node."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    out = {}
    for name, st in dep.status(timeout_s=5.0)["actors"].items():
        if isinstance(st, dict) and isinstance(st.get("pid"), int) and st.get("node_id") == here:
            out[name] = st["pid"]
    return out


def run_loadtest(
    plan: LoadTestPlan, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Run one load test as planned; the summary (``ok`` says whether it passed)."""
    plan.validate()
    import ray

    from ..gateway.server import (
        GatewaySettings,
        list_gateways,
        local_gateway_url,
        start_gateways,
        stop_gateways,
    )
    from ..runtime import connect, deploy
    from ..runtime.deployment import start_local_ray, stop_ray
    from ..runtime.workload import replica_states

    out = plan.results_dir or Path("results") / f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"r{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    embedded = plan.address is None
    namespace = plan.namespace or f"loadtest-{os.getpid()}"
    summary: dict[str, Any] = {
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "results_dir": str(out),
        "run_id": run_id,
        "namespace": namespace,
    }
    dep = None
    started_ray = False
    data_dir: str | None = None
    procs: list[subprocess.Popen] = []  # Locust processes we started
    hosts: list[tuple[Any, dict[str, Any]]] = []  # Locust workers placed by Ray
    try:
        if embedded:
            progress("starting a local Ray ...")
            start_local_ray(namespace, plan.num_cpus)
            started_ray = True
            progress(f"deploying f={plan.f} in namespace {namespace} ...")
            data_dir = tempfile.mkdtemp(prefix="pmmc-loadtest-")
            dep = deploy({"namespace": namespace, "f": plan.f, "data_dir": data_dir})
        else:
            dep = connect(namespace, address=plan.address)
        ray_address = ray.get_runtime_context().gcs_address
        host = plan.gateway_url
        gateways: list[dict[str, Any]] = []
        if "http" in plan.clients and host is None:
            if embedded:
                gateways = start_gateways(namespace, GatewaySettings(port=0))
                host = gateways[0]["url"]
            else:
                host = local_gateway_url(namespace)
                if host is None:
                    raise RuntimeError(
                        f"no gateway of {namespace!r} on this node: start one with "
                        f"`pmmc-ray gateway start --namespace {namespace}` or pass --gateway-url"
                    )
        summary["gateway_url"] = host
        mhost = "127.0.0.1"
        if plan.workers_via_ray:
            from .locust_hosts import master_host

            mhost = master_host()
        cmds = locust_commands(plan, out, run_id, host, ray_address, namespace, mhost)
        summary["locust_command"] = " ".join(cmds.main)
        meter = _CpuMeter()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        main_log = out / ("locust-master.log" if plan.workers else "locust.log")
        with main_log.open("w") as log:
            procs.append(subprocess.Popen(cmds.main, stdout=log, stderr=subprocess.STDOUT, env=env))
        if plan.workers and plan.workers_via_ray:
            from .locust_hosts import start_locust_workers

            texts = {f.name: f.read_text() for f in cmds.files}
            texts["kvload.py"] = (plan.loadtest_dir / "kvload.py").read_text()
            load = [f.name for f in cmds.files]
            hosts = start_locust_workers(plan.workers, texts, load, cmds.worker_args)
            summary["ray_placed_workers"] = [info for _, info in hosts]
        else:
            for i in range(plan.workers):
                with (out / f"locust-worker-{i}.log").open("w") as log:
                    procs.append(
                        subprocess.Popen(
                            cmds.worker_command(), stdout=log, stderr=subprocess.STDOUT, env=env
                        )
                    )
        progress(
            f"Locust: {plan.users} users ({'+'.join(plan.clients)}), mix {plan.mix}, "
            f"{plan.duration_s:g}s"
            + (f", shape {plan.shape}" if plan.shape else "")
            + (f", master + {plan.workers} workers" if plan.workers else "")
            + (" placed by Ray" if hosts else "")
            + (f", gateway {host}" if host else "")
        )
        meter.start()
        if dep is not None:
            for pid in _local_actor_pids(dep).values():
                meter.add("pmmc_actors", pid)
        here = ray.get_runtime_context().get_node_id()
        for g in gateways or list_gateways(namespace):
            if isinstance(g.get("pid"), int) and g.get("node_id") == here:
                meter.add("gateway", g["pid"])
        for _, info in hosts:  # not our children: sampled
            if info["node_id"] == here:
                meter.add("locust", info["pid"])
        deadline = time.monotonic() + plan.duration_s + 180
        main_proc = procs[0]
        local_hosts = [i["pid"] for _, i in hosts if i["node_id"] == here]
        while main_proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("Locust did not finish in time; killed it")
            # Sidecars appear once users start; those of our own Locust processes are in
            # our RUSAGE_CHILDREN once reaped, those of Ray-placed workers are not.
            for pids, ours in (([p.pid for p in procs], True), (local_hosts, False)):
                for pid in pids:
                    try:
                        for c in psutil.Process(pid).children(recursive=True):
                            meter.add("sidecars", c.pid, in_children=ours)
                    except psutil.Error:
                        pass
            meter.sample()
            time.sleep(1.0)
        codes = []
        for p in procs[1:]:
            try:
                codes.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        for i, (h, _) in enumerate(hosts):
            res = ray.get(h.wait.remote(60), timeout=120)
            (out / f"locust-worker-{i}.log").write_text(res["log"])
            codes.append(res["returncode"])
        cpu = meter.stop()
        summary["locust_exit_code"] = main_proc.returncode
        summary["worker_exit_codes"] = codes
        summary["cpu"] = cpu
        summary["locust"] = _locust_totals(out, run_id)
        # kvload.py writes it when the test stops: complete only if every worker known
        # during the run delivered all of its operations (and nothing of another run
        # came in). No file (Locust died first): not complete either.
        meta_file = out / f"history-{run_id}.meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
        summary["history_meta"] = meta
        summary["history_complete"] = bool(
            meta and meta.get("run") == run_id and meta.get("complete") is True
        )
        hist = out / f"history-{run_id}.jsonl"
        summary["history_file"] = str(hist)
        if plan.check:
            if hist.exists():
                progress(f"checking {hist.name} for linearizability ...")
                summary["linearizability"] = check_histories(
                    [hist], skew_s=plan.skew_s, timeout_s=plan.lincheck_timeout_s
                )
            else:
                summary["linearizability"] = {"verdict": "missing", "files": [str(hist)]}
        if embedded and dep is not None:
            agree, states = replica_states(dep)
            summary["replicas_agree"] = agree
            summary["replica_states"] = states
    finally:
        _stop_locust(procs, hosts)  # first: the hosts need Ray
        if embedded:
            try:
                if dep is not None:
                    stop_gateways(namespace)
                    dep.shutdown(delete_data=True)
            finally:
                if started_ray:
                    stop_ray()
                if data_dir is not None:
                    shutil.rmtree(data_dir, ignore_errors=True)
    lin = summary.get("linearizability", {}).get("verdict")
    tot = summary["locust"]
    summary["ok"] = bool(
        summary["locust_exit_code"] == 0
        and tot.get("requests", 0) > 0
        and tot.get("failures", 1) == 0
        and summary["history_complete"]
        and (not plan.check or lin == "linearizable")
        and summary.get("replicas_agree", True)
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _stop_locust(procs: list[subprocess.Popen], hosts: list[tuple[Any, dict[str, Any]]]) -> None:
    """Kill every Locust process still running and every Ray-placed worker host (its
    process and its folder go too). Their sidecars exit when their parent does."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass
    if hosts:
        from .locust_hosts import stop_hosts

        stop_hosts([h for h, _ in hosts])


def _locust_totals(out: Path, run_id: str) -> dict[str, Any]:
    """Locust's final totals: ``stats-<run id>.json`` (written by kvload.py when Locust
    quits), else the last ``locust_stats.csv`` (rewritten once a second, so it can
    miss the final second)."""
    final = out / f"stats-{run_id}.json"
    if final.exists():
        data = json.loads(final.read_text())
        return {
            **_op_row(data["total"]),
            "by_operation": {
                f"{e['type']} {e['name']}".strip(): _op_row(e) for e in data["entries"]
            },
            "source": str(final),
        }
    try:
        rows = read_locust_stats(out / "locust")
    except FileNotFoundError:
        return {"error": f"no {final} and no {out / 'locust'}_stats.csv"}

    def num(row: dict[str, Any], k: str) -> float | None:
        try:
            return float(row[k])
        except (KeyError, TypeError, ValueError):
            return None

    def csv_row(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "requests": int(num(row, "Request Count") or 0),
            "failures": int(num(row, "Failure Count") or 0),
            "rps": num(row, "Requests/s"),
            "p50_ms": num(row, "50%"),
            "p95_ms": num(row, "95%"),
            "p99_ms": num(row, "99%"),
            "avg_ms": num(row, "Average Response Time"),
        }

    return {
        **csv_row(rows.get("Aggregated", {})),
        "by_operation": {k: csv_row(v) for k, v in rows.items() if k != "Aggregated"},
        "source": str(out / "locust_stats.csv"),
    }


def _op_row(e: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms")
    return {k: e.get(k) for k in keys}
