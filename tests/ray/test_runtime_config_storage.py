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
    # A fresh start replaces whatever a dead deployment left behind.
    fresh = RecordLog.create(p)
    assert fresh.load() == []
    fresh.close()
    p.unlink()
    assert not RecordLog.exists(p)
