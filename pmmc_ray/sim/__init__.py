"""Deterministic simulation of PMMC deployments with faults, and its checkers."""

from .runner import Summary, run_many, run_seed, trace_digest
from .world import BUGS, FAULT_KINDS, Faults, SimParams, SimResult, Simulation

__all__ = [
    "BUGS",
    "FAULT_KINDS",
    "Faults",
    "SimParams",
    "SimResult",
    "Simulation",
    "Summary",
    "run_many",
    "run_seed",
    "trace_digest",
]
