"""Small builders for role unit tests."""

from __future__ import annotations

from pmmc_ray.core import Ballot, Batch, Command
from pmmc_ray.core.messages import Effect, Send


def batch(*ops: tuple, client: str = "c", first_id: int = 1) -> Batch:
    """A batch of KV commands from one client with consecutive command ids."""
    return Batch(tuple(Command(client, first_id + i, op) for i, op in enumerate(ops)))


def ballot(r: int, leader: str = "leader-0") -> Ballot:
    return Ballot(r, leader)


def sends(effects: list[Effect]) -> list[tuple[str, object]]:
    """(destination, message) of every Send effect, in order."""
    return [(e.dst, e.msg) for e in effects if isinstance(e, Send)]
