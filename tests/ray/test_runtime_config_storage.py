"""DeploymentConfig and the SQLite record log (no Ray needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from pmmc_ray.core import Ballot, Timing
from pmmc_ray.core.messages import AcceptorPromise, LeaderRound
from pmmc_ray.runtime.config import ConfigFileError, DeploymentConfig, load_app_class
from pmmc_ray.runtime.storage import RecordLog, storage_path


def test_sizes_default_from_f():
    c = DeploymentConfig(f=2)
    assert (c.replicas, c.leaders, c.acceptors) == (3, 3, 5)
    assert c.initial_config().acceptors == tuple(f"acceptor-{i}" for i in range(5))
    assert DeploymentConfig(acceptors=1).acceptors == 1


def test_timing_maps_onto_core_timing():
    c = DeploymentConfig(window=4, retry=70)
    missing = set(Timing.__dataclass_fields__) - set(DeploymentConfig.model_fields)
    assert not missing, f"core Timing fields not exposed by DeploymentConfig: {missing}"
    fields = {k: getattr(c, k) for k in Timing.__dataclass_fields__}
    assert c.timing() == Timing(**{**fields, "window": 4, "retry": 70})


@pytest.mark.parametrize(
    "bad",
    [
        {"namespace": "Bad_Name"},
        {"replicas": 0},
        {"f": -1},
        {"timeout_min": 10_000},
        {"no_such_field": 1},
        {"app": "not an import path"},
    ],
)
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        DeploymentConfig(**bad)


def test_from_json_and_toml(tmp_path):
    j = tmp_path / "d.json"
    j.write_text(json.dumps({"namespace": "prod", "f": 2}))
    assert DeploymentConfig.from_file(j).acceptors == 5
    t = tmp_path / "d.toml"
    t.write_text('namespace = "prod"\nreplicas = 3\n')
    assert DeploymentConfig.from_file(t).replicas == 3


def test_bad_file_errors_name_file_and_field(tmp_path):
    t = tmp_path / "d.toml"
    t.write_text("window = 0\n")
    with pytest.raises(ConfigFileError, match=r"d\.toml.*window"):
        DeploymentConfig.from_file(t)
    j = tmp_path / "d.json"
    j.write_text("{not json")
    with pytest.raises(ConfigFileError, match=r"d\.json.*not valid JSON"):
        DeploymentConfig.from_file(j)
    with pytest.raises(ConfigFileError, match="unsupported"):
        DeploymentConfig.from_file(tmp_path / "d.yaml")


def test_importing_the_config_does_not_import_ray():
    code = (
        "import sys, pmmc_ray; pmmc_ray.DeploymentConfig(f=1); "
        "import pmmc_ray.runtime.config; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_load_app_class():
    from pmmc_ray.app import KVStore

    assert load_app_class("pmmc_ray.app:KVStore") is KVStore
    with pytest.raises(ValueError, match="cannot load"):
        load_app_class("pmmc_ray.app:Nope")


def test_record_log_round_trip_and_marker(tmp_path):
    p = storage_path(tmp_path / "ns", "acceptor-0")
    assert not RecordLog.exists(p)
    log = RecordLog.create(p)
    recs = [AcceptorPromise(0, Ballot(1, "leader-0")), LeaderRound(3)]
    log.append(recs)
    log.append([])
    log.append([LeaderRound(4)])
    log.close()
    assert RecordLog.exists(p)
    again = RecordLog.open(p)
    assert again.load() == [*recs, LeaderRound(4)]
    assert again.count() == 3
    again.close()
    # A log is never replaced, whatever its owner: create refuses.
    with pytest.raises(FileExistsError, match="never replaced"):
        RecordLog.create(p)
    assert RecordLog.open(p).load() == [*recs, LeaderRound(4)]
    p.unlink()
    assert not RecordLog.exists(p)


def test_record_log_of_another_format_is_refused(tmp_path):
    import sqlite3

    from pmmc_ray.runtime.storage import StorageFormatError

    p = storage_path(tmp_path, "acceptor-0")
    RecordLog.create(p, "a" * 32).close()
    with sqlite3.connect(p) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'format'")  # as written before format 1
    with pytest.raises(StorageFormatError, match="format 0"):
        RecordLog.open(p)


def test_a_checkpoint_record_drops_every_earlier_record(tmp_path):
    from pmmc_ray.core.messages import ReplicaDecided, ReplicaSnapshot

    p = storage_path(tmp_path, "replica-0")
    log = RecordLog.create(p, "a" * 32)
    log.append([ReplicaDecided(()), ReplicaDecided(())])
    cp = ReplicaSnapshot(3, (), b"{}", (), "d")
    log.append([ReplicaDecided(()), cp, ReplicaDecided(())])
    assert log.load() == [cp, ReplicaDecided(())]
    log.close()


def test_file_lock_is_exclusive_names_its_holder_and_dies_with_its_holder(tmp_path):
    import subprocess
    import sys

    from pmmc_ray.runtime.storage import FileLock, StorageLocked

    path = tmp_path / "acceptor-0.lock"
    assert FileLock.holder(path) is None
    lock = FileLock.acquire(path, "me, pid 1")
    assert FileLock.holder(path) == "me, pid 1"
    with pytest.raises(StorageLocked, match="held by another live process \\(me, pid 1\\)"):
        FileLock.acquire(path, "someone else", timeout_s=0.2)
    lock.release()
    assert FileLock.holder(path) is None
    # a process that dies (SIGKILL) releases it
    code = (
        "import sys, time; from pathlib import Path; from pmmc_ray.runtime.storage import FileLock;"
        f"FileLock.acquire(Path({str(path)!r}), 'child'); print('locked', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert FileLock.holder(path) == "child"
    finally:
        child.kill()
        child.wait()
    FileLock.acquire(path, "me again", timeout_s=5).release()


def test_manifest_round_trip_and_refusals(tmp_path):
    from pmmc_ray.runtime.manifest import (
        DataDirError,
        Manifest,
        config_differences,
        read_manifest,
        write_manifest,
    )

    assert read_manifest(tmp_path) is None
    cfg = DeploymentConfig(namespace="kv")
    m = Manifest("kv", "a" * 32, cfg.model_dump(exclude={"deployment_id"}), ["acceptor-0"])
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back is not None and back.deployment_id == "a" * 32 and back.members == ["acceptor-0"]
    # timing may change between runs; sizes, app and WINDOW may not
    assert config_differences(m.config, cfg.model_copy(update={"retry": 77})) == []
    diffs = config_differences(m.config, DeploymentConfig(namespace="kv", f=2, window=4))
    assert [d.split(":")[0] for d in diffs] == ["replicas", "leaders", "acceptors", "window"]
    (tmp_path / "deployment.json").write_text('{"format": 99}')
    with pytest.raises(DataDirError, match="format 99"):
        read_manifest(tmp_path)
    (tmp_path / "deployment.json").write_text("{not json")
    with pytest.raises(DataDirError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_placement_spreads_every_role_and_follows_the_previous_node():
    from pmmc_ray.runtime.placement import plan, spread_warnings

    names = [
        *(f"acceptor-{i}" for i in range(3)),
        "replica-0",
        "replica-1",
        *(x for i in range(2) for x in (f"scout-{i}", f"commander-{i}", f"leader-{i}")),
    ]
    nodes = [("n0", "10.0.0.1"), ("n1", "10.0.0.2"), ("n2", "10.0.0.3")]
    where = plan(names, nodes)
    for role, n in (("acceptor", 3), ("replica", 2), ("leader", 2)):
        placed = [where[f"{role}-{i}"] for i in range(n)]
        assert len(set(placed)) == n, (role, placed)  # one node loss costs one member
    for i in range(2):  # scouts and commanders go with their leader
        assert where[f"scout-{i}"] == where[f"commander-{i}"] == where[f"leader-{i}"]
    assert plan(names, nodes[:1]) == {}
    # back on the node with the address it last ran on
    again = plan(names, list(reversed(nodes)), {"acceptor-0": "10.0.0.3"})
    assert again["acceptor-0"] == "n2"
    assert spread_warnings({"acceptor": 3, "replica": 2}, 2) == [
        "only 2 alive node(s) for 3 acceptors: one node failure can take down more than one "
        "acceptor (a majority of acceptors, stopping the store)"
    ]


def test_the_log_counts_bytes_since_its_last_checkpoint(tmp_path):
    from pmmc_ray.core.messages import ReplicaDecided, ReplicaSnapshot

    p = storage_path(tmp_path, "replica-0")
    log = RecordLog.create(p, "a" * 32)
    log.append([ReplicaDecided(())] * 3)
    before = log.bytes_since_checkpoint
    assert before > 0 and log.checkpoint_bytes == 0
    log.append([ReplicaSnapshot(3, (), b"x" * 1000, (), "d")])
    assert log.checkpoint_bytes > 1000 and log.bytes_since_checkpoint == 0
    log.append([ReplicaDecided(())])
    again = RecordLog.open(p)
    again.load()
    assert (again.checkpoint_bytes, again.bytes_since_checkpoint) == (
        log.checkpoint_bytes,
        log.bytes_since_checkpoint,
    )
