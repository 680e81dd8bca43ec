"""Where each member of a deployment runs: spread every role over the Ray nodes.

A node that dies takes every actor on it. Acceptors, replicas and leaders are each
spread round-robin over the alive nodes, with the roles offset from one another, so
that with at least as many nodes as members of a role, one lost node costs at most
one member of each role (DESIGN 4). A leader's scout and commander go with their
leader: they are useless without it. Re-attaching after a whole-cluster restart puts
each member back on the node (by address) it last ran on, where its disk is.

Nothing here imports ray: nodes are given as (node id, address) pairs.
"""

from __future__ import annotations

from collections import Counter

from ..core.ids import role_of

__all__ = ["plan", "spread_warnings"]

_ROLE_OFFSET = {"acceptor": 0, "replica": 0, "leader": 1}
"""With 3 nodes and f=1: acceptors on nodes 0,1,2, replicas on 0,1, leaders on 1,2."""


def _leader_of(name: str) -> str:
    return "leader-" + name.split("-", 1)[1]


def plan(
    names: list[str],
    nodes: list[tuple[str, str]],
    previous: dict[str, str] | None = None,
) -> dict[str, str]:
    """member name -> node id, for every member of ``names`` (empty if one node).

    ``nodes`` are the alive (node id, address) pairs, in a stable order. ``previous``
    maps members to the address they last ran on: a member goes back there when
    exactly one alive node has that address (several nodes on one address, as in a
    one-machine test cluster, share a disk anyway).
    """
    if len(nodes) <= 1:
        return {}
    previous = previous or {}
    by_addr = Counter(addr for _, addr in nodes)
    node_of_addr = {addr: nid for nid, addr in nodes if by_addr[addr] == 1}
    out: dict[str, str] = {}
    load: dict[str, Counter[str]] = {}
    # Pinned members first, so the spread of the rest accounts for them.
    for n in names:
        addr = previous.get(n)
        if addr in node_of_addr:
            out[n] = node_of_addr[addr]
            load.setdefault(role_of(n), Counter())[out[n]] += 1
    index: Counter[str] = Counter()
    for n in names:
        role = role_of(n)
        if role in ("scout", "commander") or n in out:
            continue
        counts = load.setdefault(role, Counter())
        start = _ROLE_OFFSET.get(role, 0) + index[role]
        index[role] += 1
        # the least loaded node for this role, round-robin from the role's offset
        order = [nodes[(start + i) % len(nodes)][0] for i in range(len(nodes))]
        best = min(order, key=lambda nid: counts[nid])
        out[n] = best
        counts[best] += 1
    for n in names:
        if role_of(n) in ("scout", "commander"):
            leader = _leader_of(n)
            if leader in out:
                out[n] = out[leader]
    return out


def spread_warnings(counts: dict[str, int], n_nodes: int) -> list[str]:
    """What a lost node can cost when the cluster has too few nodes for the spread."""
    out = []
    for role in ("acceptor", "replica", "leader"):
        n = counts.get(role, 0)
        if n > n_nodes:
            out.append(
                f"only {n_nodes} alive node(s) for {n} {role}s: one node failure can take "
                f"down more than one {role}"
                + (" (a majority of acceptors, stopping the store)" if role == "acceptor" else "")
            )
    return out
