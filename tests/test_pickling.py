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


def test_batches_written_as_dataclasses_still_load(monkeypatch):
    """Before batches became blobs, Batch was a slots dataclass: pickle one with that
    very class (put in its place for the moment) and load it with today's."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class Batch:  # noqa: F811 - the old definition, same module and name
        commands: tuple

    Batch.__module__, Batch.__qualname__ = types.__name__, "Batch"
    cmds = (Command("c", 1, ("put", "k", "v"), 3),)
    with monkeypatch.context() as m:
        m.setattr(types, "Batch", Batch)
        old = pickle.dumps(types.PValue(Ballot(1, "leader-0"), 2, Batch(cmds)), protocol=5)
    pv = pickle.loads(old)
    assert type(pv.value) is types.Batch
    assert pv.value == types.Batch(cmds) and pv.value.commands == cmds


def test_a_batch_travels_as_one_blob_and_decodes_only_when_asked():
    from pmmc_ray.core import codec

    b = Batch(tuple(Command(f"c{i}", 1, ("put", "k", str(i))) for i in range(100)))
    again = pickle.loads(pickle.dumps(b, protocol=5))
    assert again._commands is None  # not decoded yet: a relay never pays for it
    again2 = pickle.loads(pickle.dumps(again, protocol=5))  # re-pickled from the blob
    assert again2._blob == again._blob and again2._commands is None
    assert again2 == b and hash(again2) == hash(b) and repr(again2) == repr(b)
    assert again2.commands == b.commands
    # A blob that holds anything but commands is refused when decoded.
    from pmmc_ray.core.types import _batch_from_blob

    bad = _batch_from_blob(codec.dumps(("not", "commands")))
    import pytest

    with pytest.raises(codec.CodecError):
        _ = bad.commands


def test_a_batch_of_foreign_ops_pickles_the_plain_way():
    class Op:
        def __eq__(self, other):
            return isinstance(other, Op)

    b = Batch((Command("c", 1, Op()),))
    red = b.__reduce__()
    assert red[0] is Batch  # no blob: the data plane refuses it, Ray pickles it
