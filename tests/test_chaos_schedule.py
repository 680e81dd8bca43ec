"""The chaos schedule (a pure function of the seed) and the chaos report, without Ray."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from pmmc_ray.ops.chaos import (
    GROUPS,
    KINDS,
    ChaosResult,
    Fault,
    FaultRecord,
    View,
    _unavailability,
    describe,
    expand_kinds,
    make_schedule,
    planned_kills,
    resolve,
)
from pmmc_ray.ops.chaos_report import render_html


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    a = make_schedule(7, 300)
    assert a == make_schedule(7, 300)
    assert [describe(f) for f in a] == [describe(f) for f in make_schedule(7, 300)]
    assert a != make_schedule(8, 300)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_300_seconds_hold_every_kind_and_kill_every_role_three_times(seed):
    sched = make_schedule(seed, 300)
    assert {f.kind for f in sched} == set(KINDS)
    assert min(planned_kills(sched).values()) >= 3, planned_kills(sched)
    for kind in ("kill-leader", "kill-acceptors", "kill-replicas", "kill-role", "kill-several"):
        methods = {f.method for f in sched if f.kind == kind}
        if kind != "kill-role":
            assert methods == {"ray.kill", "sigkill"}, (kind, methods)
    directions = {f.param("direction") for f in sched if f.kind.startswith("partition-")}
    assert {"both", "in", "out"} <= directions  # one-way partitions too


def test_episodes_never_overlap_and_fit_the_duration():
    for seed in range(20):
        sched = make_schedule(seed, 200)
        assert sched[0].at_s >= 5.0
        for a, b in zip(sched, sched[1:], strict=False):
            assert b.at_s >= a.at_s + a.duration_s + 3.0 - 0.1
        last = sched[-1]
        assert last.at_s + last.duration_s <= 200 - 6.0


def test_a_kill_never_takes_a_majority_of_acceptors():
    for f_ in (1, 2):
        for seed in range(30):
            for fault in make_schedule(seed, 300, f=f_):
                accs = [t for t in fault.targets if t.startswith("acceptor:")]
                assert len(accs) <= f_


def test_fault_kinds_and_groups():
    assert expand_kinds("all") == KINDS
    assert expand_kinds("kill,pause") == (*GROUPS["kill"], "pause")
    assert expand_kinds(["drop", "node"]) == ("drop", "node-kill", "disk-loss")
    with pytest.raises(ValueError, match="unknown fault kind"):
        expand_kinds("kill,earthquake")
    only = make_schedule(3, 120, "network")
    assert only and {f.kind for f in only} <= set(GROUPS["network"])


def test_targets_resolve_against_the_current_configuration():
    v = View(
        ("acceptor-0", "acceptor-3", "acceptor-2"),
        ("replica-0", "replica-1"),
        ("leader-0", "leader-1"),
        "leader-1",
    )
    assert resolve("leader:active", v) == ["leader-1"]
    assert resolve("scout:active", v) == ["scout-1"]
    assert resolve("commander:passive", v) == ["commander-0"]
    assert resolve("acceptor:1", v) == ["acceptor-3"]  # replaced members count
    assert resolve("acceptor:4", v) == ["acceptor-3"]
    assert resolve("replica:*", v) == ["replica-0", "replica-1"]
    assert resolve("node:acceptor:2", v) == ["acceptor-2"]
    nobody = View(v.acceptors, v.replicas, v.leaders, None)
    assert resolve("leader:active", nobody) == ["leader-0"]


def test_unavailability_is_the_longest_stretch_without_a_write():
    a = FaultRecord(0, "kill-leader", 5.0, start_s=10.0, end_s=10.0)
    b = FaultRecord(1, "drop", 20.0, start_s=20.0, end_s=25.0)
    c = FaultRecord(2, "pause", 30.0, start_s=30.0, end_s=33.0)
    skipped = FaultRecord(3, "node-kill", 40.0, skipped="no cluster")
    writes = [9.0, 10.1, 12.6, 13.0, 21.0, 21.5, 29.0]
    _unavailability([a, b, c, skipped], writes, end_s=35.0)
    assert a.unavailable_s == 2.5  # 10.1 -> 12.6
    assert b.unavailable_s == 7.5  # 21.5 -> 29.0
    assert c.unavailable_s == 5.0 and "no write acknowledged" in c.notes[0]
    assert skipped.unavailable_s is None


def _result() -> ChaosResult:
    sched = make_schedule(1, 60)
    res = ChaosResult(1, 60.0, 2, list(KINDS), sched)
    res.faults = [
        FaultRecord(f.index, f.kind, f.at_s, f.method, targets=["leader-0"], params=dict(f.params))
        for f in sched
    ]
    for i, r in enumerate(res.faults):
        r.start_s = r.planned_at_s
        r.end_s = r.planned_at_s + sched[i].duration_s
        r.next_write_s = 0.5 + i / 10
        r.unavailable_s = 1.0
        if r.kind.startswith("kill-"):
            r.killed = ["leader-0", "scout-0"]
            r.killed_active_leader = True
    res.faults[-1].start_s = res.faults[-1].end_s = None
    res.faults[-1].skipped = "no <cluster> & no node"
    res.elapsed_s = 61.0
    res.ops = [(t / 4, t / 4 + 0.05, "put", "ok") for t in range(240)]
    res.ops += [(30.0, None, "append", "unknown")]
    res.outcomes = {"ok": 240, "unknown": 1}
    res.linearizable = "linearizable"
    res.replicas_converged = True
    res.roles_alive = True
    return res


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_the_report_is_self_contained_and_marks_every_fault():
    res = _result()
    s = res.to_dict()
    assert s["ok"] and s["kills_by_role"]["scout"] > 0
    assert s["recovery"]["leader_kill_to_next_write_s"]["n"] > 0
    page = render_html(s)
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags
    assert not [v for k, v in p.attrs if k in ("src", "href")]
    assert "svg" in p.tags and "polyline" in p.tags
    text = "".join(p.text)
    applied = [r for r in res.faults if r.start_s is not None]
    for r in applied:
        assert f"#{r.index} {r.kind}" in text  # labelled on the timeline
    assert text.count("<cluster>") >= 1  # escaped, shown as text
    assert "PASSED" in text and "pmmc-ray chaos --seed 1" in text
    bands = re.findall(r"<rect [^>]*fill-opacity=\"0\.(?:16|55)\"", page)
    assert len(bands) == 2 * len(applied)  # one band per fault in each chart


def test_the_report_says_failed_and_shows_the_injected_bug():
    res = _result()
    res.lost_appends = ["k [1.2]"]
    res.injected_bug = "acceptor-no-persist"
    res.linearizable = "unknown"
    s = res.to_dict()
    assert not s["ok"] and s["verdicts"]["undecided"]
    assert s["verdicts"]["violations"] == ["1 acknowledged appends lost"]
    page = render_html(s)
    assert "FAILED" in page and "acceptor-no-persist" in page and "could not decide" in page


def test_fault_records_and_schedules_are_json_ready():
    import json

    s = _result().to_dict()
    back = json.loads(json.dumps(s))
    assert back["schedule"][0] == make_schedule(1, 60)[0].to_dict()
    assert isinstance(Fault(0, 1.0, "drop", params=(("drop", 0.1),)).param("drop"), float)


def test_the_timeline_alone_is_a_standalone_svg(tmp_path):
    import xml.etree.ElementTree as ET

    from pmmc_ray.ops.chaos_report import write_report

    page = write_report(_result().to_dict(), tmp_path / "report.html")
    root = ET.parse(page.parent / "timeline.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}style") is not None


def test_the_readme_timeline_is_what_the_renderer_makes_of_its_run():
    """The README shows the timeline of a real 300 s run (seed 1); its summary is kept
    next to it, and rendering that summary again gives the same picture."""
    from pathlib import Path

    from pmmc_ray.ops.chaos_report import render_timeline_svg

    data = Path(__file__).parent / "data"
    summary = json.loads((data / "chaos-seed1-summary.json").read_text())
    assert summary["ok"] and summary["seed"] == 1 and summary["duration_s"] == 300
    svg = (data / "chaos-seed1-timeline.svg").read_text()
    assert render_timeline_svg(summary) == svg
    assert all(f"#{f['index']} {f['kind']}" in svg for f in summary["faults"] if f["start_s"])


def test_verdicts_a_check_that_did_not_run_or_decide_is_no_pass():
    assert _result().ok and not _result().violations() and not _result().undecided
    for field_name in ("replicas_converged", "roles_alive"):
        for value in (None, False):
            r = _result()
            setattr(r, field_name, value)
            assert r.violations() and not r.ok, (field_name, value)
    r = _result()
    r.linearizable = "unknown"
    assert r.undecided and not r.ok and not r.violations()
    r = _result()
    r.linearizable = None
    assert r.undecided and not r.ok
    r = _result()
    r.unfinished_clients = ["chaos-client-1"]
    assert r.undecided and not r.ok
    assert r.to_dict()["verdicts"]["undecided"] is True
    r = _result()
    r.linearizable, r.lin_detail = "not_linearizable", "key k"
    assert any("not linearizable" in v for v in r.violations()) and not r.ok
    r = _result()
    r.lost_appends = ["t1"]
    assert r.violations() == ["1 acknowledged appends lost"]


def test_a_run_that_raises_is_no_verdict():
    from pmmc_ray.ops.chaos_cli import EXIT_CRASHED, EXIT_UNDECIDED, EXIT_VIOLATION
    from pmmc_ray.ops.chaos_cli import _run_chaos_or_none as guarded

    said: list[str] = []

    def boom(*_a, **_k):
        raise RuntimeError("the cluster fell apart")

    assert guarded(boom, say=said.append) is None
    assert "the cluster fell apart" in said[0]
    assert guarded(lambda *a, progress, **k: ("res", a, k), 1, say=said.append, x=2) == (
        "res",
        (1,),
        {"x": 2},
    )
    assert len({EXIT_VIOLATION, EXIT_UNDECIDED, EXIT_CRASHED, 0, 2}) == 5


def test_kills_by_method_counts_a_sigkill_that_fell_back_to_ray_kill() -> None:
    """SIGKILL reaches only this machine's processes; a remote actor in a sigkill
    episode is killed by ray.kill and counted as such."""
    res = ChaosResult(1, 60.0, 2, ["failover-lagging-replica"], [])
    rec = FaultRecord(0, "failover-lagging-replica", 10.0, "sigkill")
    rec.start_s = 10.0
    rec.killed = ["acceptor-0", "acceptor-1", "leader-0"]
    rec.ray_killed_instead = ["acceptor-1", "acceptor-2"]  # acceptor-2 never came back
    res.faults = [rec]
    assert res.kills_by_method() == {"sigkill": 2, "ray.kill": 1}


def test_view_falls_back_to_the_last_configuration_seen(monkeypatch) -> None:
    """When no replica answers, the nemesis uses the last configuration it saw (an
    acceptor may have been replaced since the deployment), not the deployed one."""
    import pmmc_ray.runtime.workload as workload
    from pmmc_ray.ops.chaos import Nemesis

    class Config:
        def acceptor_ids(self):
            return ["acceptor-0", "acceptor-1", "acceptor-2"]

        def replica_ids(self):
            return ["replica-0", "replica-1"]

        def leader_ids(self):
            return ["leader-0", "leader-1"]

    class Dep:
        config = Config()
        answer = True

        def configurations(self, timeout_s):
            if not self.answer:
                raise TimeoutError("no replica answered")
            members = ["acceptor-0", "acceptor-3", "acceptor-2"]
            return [
                {
                    "acceptors": members,
                    "replicas": self.config.replica_ids(),
                    "leaders": self.config.leader_ids(),
                }
            ]

    monkeypatch.setattr(workload, "active_leader", lambda dep, wait_s: "leader-0")
    dep = Dep()
    nem = Nemesis(dep, say=lambda line: None, seed=1)
    dep.answer = False
    assert nem.view().acceptors == ("acceptor-0", "acceptor-1", "acceptor-2")  # nothing seen
    dep.answer = True
    assert nem.view().acceptors == ("acceptor-0", "acceptor-3", "acceptor-2")
    dep.answer = False
    view = nem.view()
    assert view.acceptors == ("acceptor-0", "acceptor-3", "acceptor-2")
    assert view.replicas == ("replica-0", "replica-1") and view.active == "leader-0"
