"""Seeded simulation (DESIGN 6, step 3): safety after every step, linearizability at the
end, every operation completed once faults heal, byte-identical replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from pmmc_ray.sim import (
    FAULT_KINDS,
    Faults,
    SimParams,
    Simulation,
    Summary,
    run_many,
    run_seed,
    trace_digest,
)

SWEEP_SEEDS = int(os.environ.get("PMMC_SIM_SEEDS", "300"))


def sweep(seeds, faults: Faults, params: SimParams | None = None) -> Summary:
    s = Summary()
    for r in run_many(list(seeds), faults, params, workers=2):
        s.add(r)
    return s


def test_all_faults_sweep_is_clean():
    s = sweep(range(SWEEP_SEEDS), Faults.parse("all"))
    assert s.failures == []
    assert s.runs == SWEEP_SEEDS and s.completed == s.operations > 0
    # the faults really happened
    assert s.crashes > SWEEP_SEEDS and s.partitions > SWEEP_SEEDS // 2
    assert s.runs_with_reconfig == SWEEP_SEEDS


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_alone_is_clean(kind):
    s = sweep(range(1000, 1030), Faults.parse(kind))
    assert s.failures == []


def test_no_faults_everything_completes_quickly():
    r = run_seed(5, Faults.parse("none"))
    assert r.ok and r.ops_completed == len(r.ops) and r.crashes == r.partitions == 0


def test_same_seed_same_trace_and_different_seeds_differ():
    a = run_seed(11, Faults.parse("all"), trace=True)
    b = run_seed(11, Faults.parse("all"), trace=True)
    c = run_seed(12, Faults.parse("all"), trace=True)
    assert a.trace == b.trace and trace_digest(a) == trace_digest(b)
    assert trace_digest(a) != trace_digest(c)


def test_replay_is_byte_identical_across_hash_seeds():
    """Iteration over sets of strings would make runs differ between interpreters."""
    digests = set()
    for hashseed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "pmmc_ray", "sim", "--seed", "21", "--json"],
            env={**os.environ, "PYTHONHASHSEED": hashseed},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(json.loads(out.stdout)["trace_sha256"])
    assert len(digests) == 1


def test_reconfiguration_moves_slots_to_new_epochs():
    sim = Simulation(3, Faults.parse("reconfig"), replace(SimParams(), fault_until=6000))
    r = sim.run()
    assert r.ok and r.reconfigs >= 2
    assert sim._current_config().epoch >= 2


def test_f2_deployment_is_clean():
    s = sweep(range(2000, 2020), Faults.parse("all"), SimParams(f=2, vary=False))
    assert s.failures == []


@pytest.mark.parametrize(
    "bug, expected",
    [
        ("acceptor-amnesia", {"A1", "A3"}),
        ("acceptor-forgets-collected", {"G1", "C2", "A5", "R1"}),
        ("leader-reuses-ballot", {"B1"}),
        ("leader-amnesia", {"B1"}),
        ("no-dedup", {"R1", "R3", "linearizability", "convergence"}),
        ("replica-no-persist", {"D1"}),
    ],
)
def test_known_bugs_are_caught(bug, expected):
    """The checkers can fail: each injected bug is reported by the checks it breaks."""
    found: Counter[str] = Counter()
    s = sweep(range(60), Faults.parse("all"), SimParams(bug=bug))
    for _, problems in s.failures:
        found.update(p.split(":")[0] for p in problems)
    assert s.failures, f"{bug} was never caught"
    assert set(found) & expected, found


def test_power_loss_and_every_replica_at_once_recover_from_disk():
    """Every process crashes at once, repeatedly; replicas come back from their own
    disks (no peer has state), and every operation still completes, linearizably."""
    s = sweep(range(3000, 3020), Faults.parse("power"))
    assert s.failures == [] and s.power_losses >= 20
    assert s.completed == s.operations > 0


def test_lost_disks_of_leaders_and_replicas_are_survived():
    s = sweep(range(3100, 3140), Faults.parse("disk,drop"))
    assert s.failures == [] and s.disk_losses >= 20


def test_a_replica_checkpoint_supersedes_its_earlier_records():
    sim = Simulation(4, Faults.parse("none"), replace(SimParams(vary=False), ops_per_client=40))
    sim.timing = replace(sim.timing, snapshot_every=3)
    sim.params = replace(sim.params, timing=sim.timing)
    assert sim.run().ok
    for rid in ("replica-0", "replica-1"):
        recs = sim.storage[rid]
        assert type(recs[0]).__name__ == "ReplicaSnapshot"
        assert len(recs) <= 3  # the checkpoint and at most two slots after it


def test_liveness_check_can_fail():
    r = Simulation(1, Faults.parse("none"), SimParams(max_time=50)).run()
    assert not r.ok and any(p.startswith("liveness") for p in r.problems())


def test_convergence_check_can_fail():
    sim = Simulation(1, Faults.parse("none"), SimParams())
    r = sim.run()
    assert r.ok and sim._converged()
    sim.procs["replica-1"].app.data["k0"] = "tampered"
    assert not sim._converged()


def test_faults_spec_is_validated():
    with pytest.raises(ValueError, match="unknown fault kind 'flood'"):
        Faults.parse("drop,flood")
    assert Faults.parse("none").kinds() == []
    assert Faults.parse("all").kinds() == list(FAULT_KINDS)


def test_a_leader_whose_commander_is_cut_off_steps_aside():
    """The active leader stays alive and answers pings, but its commander cannot reach
    any acceptor: it must stop claiming to lead, so the other leader takes over."""
    from pmmc_ray.core.ids import commander_of

    params = replace(SimParams(vary=False), fault_until=10**9, max_time=30_000, ops_per_client=40)
    sim = Simulation(7, Faults.parse("none"), params)
    sim.setup()
    while sim.now < 400:
        sim._run_one()
    cfg = sim._current_config()
    active = [ldr for ldr in cfg.leaders if sim.procs[ldr].epochs[0].active]
    assert len(active) == 1
    cut_at = sim.now
    sim.blocked = {(commander_of(active[0]), a) for a in cfg.acceptors}  # never healed
    took_over = None
    while not sim._all_ops_done() and sim.now < params.max_time:
        sim._run_one()
        others = [ldr for ldr in cfg.leaders if ldr != active[0]]
        if took_over is None and any(sim.procs[o].epochs[0].active for o in others):
            took_over = sim.now - cut_at
    assert sim._all_ops_done() and not sim.checker.violations
    assert took_over is not None and took_over < 3 * SimParams().timing.timeout_max


def test_progress_sees_every_sample_and_does_not_change_the_run() -> None:
    """`pmmc-ray sim --seed N --progress S` prints samples of a long run as it goes."""
    from pmmc_ray.sim.runner import run_seed, trace_digest
    from pmmc_ray.sim.world import Faults, SimParams

    faults = Faults.parse("all")
    params = SimParams(ops_per_client=40)
    samples: list[dict] = []
    with_progress = run_seed(7, faults, params, trace=True, progress=samples.append)
    without = run_seed(7, faults, params, trace=True)
    assert trace_digest(with_progress) == trace_digest(without)
    assert samples and samples == sorted(samples, key=lambda s: s["virtual_ms"])
    last = samples[-1]
    assert last["operations"] == len(without.ops)
    assert 0 < last["operations_completed"] <= last["operations"]
    assert last["peaks"] == {k: v for k, v in sorted(with_progress.peaks.items())}
