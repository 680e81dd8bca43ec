"""The interface every replicated application implements.

A state machine must be deterministic: the same sequence of ``apply`` calls on the
same initial state gives the same results and the same ``snapshot()`` bytes on every
replica. So no clocks, no randomness, no I/O, no iteration over sets of strings
inside ``apply``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class InvalidOperation(ValueError):
    """The operation is malformed for this state machine. Raised before proposing."""


class StateMachine(ABC):
    """A deterministic application replicated by PMMC replicas."""

    @abstractmethod
    def validate(self, op: Any) -> None:
        """Raise :class:`InvalidOperation` if ``op`` is malformed. Must not change state.

        Called on the client side and by the replica before proposing, so a bad
        operation never reaches the log.
        """

    @abstractmethod
    def apply(self, op: Any) -> Any:
        """Perform ``op`` (already validated) and return its result.

        If it raises :class:`InvalidOperation` anyway, the replica records the error
        as the command's deterministic outcome; the state must then be unchanged.
        """

    @abstractmethod
    def snapshot(self) -> bytes:
        """The whole state, as bytes that ``restore`` accepts (used for state transfer)."""

    @abstractmethod
    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot."""

    def is_read_only(self, op: Any) -> bool:
        """True if ``op`` never changes the state (reads still go through the log)."""
        return False
