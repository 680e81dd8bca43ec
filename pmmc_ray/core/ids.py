"""Process naming shared by the simulator and the Ray runtime."""

from __future__ import annotations


def scout_of(leader_id: str) -> str:
    """The id of the scout process that serves ``leader_id`` ("leader-1" -> "scout-1")."""
    return "scout-" + leader_id.removeprefix("leader-")


def commander_of(leader_id: str) -> str:
    """The id of the commander process that serves ``leader_id``."""
    return "commander-" + leader_id.removeprefix("leader-")


def role_of(process_id: str) -> str:
    """The role part of a process id: "acceptor-2" -> "acceptor"."""
    return process_id.split("-", 1)[0]


def leader_of_ballot(identity: str) -> str:
    """The leader process that made ballots with ``identity`` ("leader-1/3fa9" -> "leader-1")."""
    return identity.split("/", 1)[0]
