"""Protocol objects pickle through their constructors (fast, and what the data plane's
decoder allows), and records pickled the old way (before that) still load."""

from __future__ import annotations

import dataclasses
import pickle

from pmmc_ray.core import (
    Ballot,
    Batch,
    Command,
    Config,
    OpenSession,
    PValue,
    Reconfigure,
    messages,
    types,
)
from pmmc_ray.core.messages import AcceptorAccept, Decisions, P2a, Propose


def _samples():
    cfg = Config(0, 1, ("replica-0",), ("leader-0",), ("acceptor-0",))
    b = Batch((Command("c", 1, ("put", "k", "v"), 3), Command("d", 0, OpenSession())))
    pv = PValue(Ballot(2, "leader-0"), 5, b)
    return [
        cfg,
        b,
        pv,
        Propose("replica-0", cfg, 1, ((1, b),)),
        P2a("commander-0", 0, pv.ballot, ((5, b),)),
        Decisions(((5, b),)),
        AcceptorAccept(0, (pv,)),
        Reconfigure(("r",), ("l",), ("a",)),
    ]


def test_every_protocol_dataclass_rebuilds_through_its_constructor():
    for mod in (types, messages):
        for cls in vars(mod).values():
            if isinstance(cls, type) and dataclasses.is_dataclass(cls):
                assert "__reduce__" in vars(cls), cls


def test_round_trips_are_equal():
    for obj in _samples():
        assert pickle.loads(pickle.dumps(obj, protocol=5)) == obj


def test_records_pickled_the_old_way_still_load():
    """Logs written before constructors were used hold the default slots-dataclass
    pickles (__newobj__ + setstate): they must still load."""
    classes = {
        c
        for m in (types, messages)
        for c in vars(m).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c)
    }
    saved = {c: vars(c)["__reduce__"] for c in classes}
    try:
        for c in classes:
            delattr(c, "__reduce__")
        old = [pickle.dumps(obj, protocol=5) for obj in _samples()]
    finally:
        for c, r in saved.items():
            c.__reduce__ = r
    new = [pickle.dumps(obj, protocol=5) for obj in _samples()]
    assert all(a != b for a, b in zip(old, new, strict=True))  # really the old format
    assert [pickle.loads(blob) for blob in old] == _samples()
