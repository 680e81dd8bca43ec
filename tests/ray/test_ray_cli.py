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
    finally:
        assert main(["down", *common]) == 0
    assert main(["status", *common]) == 2
    assert "no deployment" in capsys.readouterr().err
