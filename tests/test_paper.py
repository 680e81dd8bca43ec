"""Claims of the paper, one test each, run in the simulator.

Invariant-by-invariant checks (R1-R5, A1-A5, C1-C2) are in test_invariants.py (each
check fails when broken) and are applied after every step of every run in
test_sim.py. Here: the behavioural claims.
"""

from __future__ import annotations

from dataclasses import replace

from pmmc_ray.core.messages import Send, StartScout
from pmmc_ray.sim import Faults, SimParams, Simulation


class CountingSim(Simulation):
    """Counts StartScout effects (a leader starting a new ballot) over time."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.scouts: list[tuple[int, str]] = []

    def _execute(self, pid, role, effects):
        for e in effects:
            if isinstance(e, Send) and isinstance(e.msg, StartScout):
                self.scouts.append((self.now, pid))
        super()._execute(pid, role, effects)


def test_section_3_a_stable_leader_is_not_preempted():
    """With failure detection (pings, timeouts), leaders stop scouting once one is active."""
    sim = CountingSim(4, Faults.parse("none"), SimParams(vary=False))
    r = sim.run()
    assert r.ok
    assert sim.scouts and all(t < 500 for t, _ in sim.scouts), sim.scouts


def test_section_3_when_the_active_leader_dies_another_takes_over():
    sim = CountingSim(4, Faults.parse("none"), SimParams(vary=False, fault_until=0))
    sim.setup()
    # run until some operations are done, then kill the active leader for good
    while sim.now < 400:
        sim._run_one()
    active = [
        p for p, role in sim.procs.items() if p.startswith("leader-") and role.epochs[0].active
    ]
    assert len(active) == 1
    sim.crash(active[0])
    done_before = sum(1 for o in sim.history if o.ret is not None)
    while sim.now < 6000 and not sim._all_ops_done():
        sim._run_one()
    assert sim._all_ops_done() and sum(1 for o in sim.history if o.ret is not None) > done_before
    assert any(t > 400 and p != active[0] for t, p in sim.scouts)


def test_section_2_1_reconfiguration_changes_acceptors_window_slots_later():
    """A configuration decided in slot s is used from slot s + WINDOW on (paper 2.1)."""
    sim = Simulation(8, Faults.parse("reconfig"), replace(SimParams(vary=False), fault_until=4000))
    r = sim.run()
    assert r.ok and r.reconfigs >= 1
    replica = next(
        p for pid, p in sorted(sim.procs.items()) if pid.startswith("replica-") and not p.recovering
    )
    for prev, cfg in zip(replica.configs, replica.configs[1:], strict=False):
        assert cfg.epoch == prev.epoch + 1
        assert cfg.start_slot > prev.start_slot
        reconfig_slot = cfg.start_slot - replica.window
        assert sim.checker.decided[reconfig_slot].reconfig is not None
