"""``pmmc-ray up | put | get | cas | append | delete | status | down`` against a running
Ray (the test session's), as an operator would use them."""

from __future__ import annotations

import json
import uuid

import pytest

from pmmc_ray.cli import main

pytestmark = pytest.mark.ray


def test_cli_lifecycle(ray_session, data_dir, tmp_path, capsys):
    ns = f"t-cli-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "dep.json"
    cfg.write_text(json.dumps({"data_dir": data_dir, "timeout_initial": 300}))
    common = ["--namespace", ns]
    assert main(["up", *common, "--config", str(cfg)]) == 0
    assert f"namespace {ns}" in capsys.readouterr().out
    try:
        assert main(["up", *common, "--config", str(cfg)]) == 2  # already deployed
        assert "already deployed" in capsys.readouterr().err
        assert main(["put", *common, "k", "v1"]) == 0
        assert main(["append", *common, "k", "+2"]) == 0
        capsys.readouterr()
        assert main(["get", *common, "k"]) == 0
        assert capsys.readouterr().out.strip() == "v1+2"
        assert main(["cas", *common, "k", "nope", "x"]) == 1
        assert main(["cas", *common, "new", "-", "x"]) == 0  # "-": expect absent
        assert main(["delete", *common, "k"]) == 0
        capsys.readouterr()
        assert main(["get", *common, "k"]) == 1
        assert "(absent)" in capsys.readouterr().err
        assert main(["put", *common, "k" * 2000, "v"]) == 2  # oversize key: rejected
        assert "key is 2000 bytes" in capsys.readouterr().err
        assert main(["status", *common]) == 0
        out = capsys.readouterr().out
        for name in ("replica-0", "leader-1", "acceptor-2", "scout-0", "commander-1"):
            assert name in out
        assert "slot_out=" in out and "configuration epoch 0" in out
        assert main(["replace", *common, "acceptor-1"]) == 0
        assert "acceptor-1 replaced by acceptor-3" in capsys.readouterr().out
        assert main(["replace", *common, "scout-0"]) == 2
        assert "only replicas, leaders and acceptors" in capsys.readouterr().err
        assert main(["status", *common, "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["actors"]["replica-0"]["slot_out"] >= 5
        # down --keep-data, then up: re-attached, nothing lost
        assert main(["down", *common, "--keep-data"]) == 0
        assert "its data stays in" in capsys.readouterr().out
        assert main(["up", *common, "--config", str(cfg)]) == 0
        assert f"re-attached 12 actors in namespace {ns}" in capsys.readouterr().out
        assert main(["get", *common, "new"]) == 0
        assert capsys.readouterr().out.strip() == "x"
        # up --fresh on live data is refused (the namespace is deployed); after down it
        # starts over
        assert main(["down", *common, "--keep-data"]) == 0
        assert main(["up", *common, "--config", str(cfg), "--fresh"]) == 0
        assert "deployed 11 actors" in capsys.readouterr().out
        assert main(["get", *common, "new"]) == 1
    finally:
        assert main(["down", *common]) == 0
    assert main(["status", *common]) == 2
    assert "no deployment" in capsys.readouterr().err


def test_cli_down_deletes_data_left_by_a_stopped_cluster(ray_session, data_dir, tmp_path, capsys):
    """After a cluster restart nothing runs, but the data is there: down deletes it."""
    from pmmc_ray.runtime.config import DeploymentConfig
    from pmmc_ray.runtime.manifest import Manifest, write_manifest

    ns = f"t-cli-left-{uuid.uuid4().hex[:6]}"
    cfg = tmp_path / "dep.json"
    cfg.write_text(json.dumps({"data_dir": data_dir}))
    c = DeploymentConfig(namespace=ns, data_dir=data_dir)
    write_manifest(c.storage_dir(), Manifest(ns, "b" * 32, c.model_dump(), ["acceptor-0"]))
    (c.storage_dir() / "acceptor-0.sqlite").write_bytes(b"x")
    args = ["down", "--namespace", ns, "--config", str(cfg)]
    assert main([*args, "--keep-data"]) == 0
    assert "its data stays" in capsys.readouterr().out
    assert main(args) == 0
    assert "deleted its data" in capsys.readouterr().out
    assert not c.storage_dir().exists()
    assert main(args) == 2
    assert "has no data" in capsys.readouterr().err
