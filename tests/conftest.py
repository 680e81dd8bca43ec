"""Shared fixtures for the test suite."""

from __future__ import annotations

import pytest

from pmmc_ray.core import Config, Timing


@pytest.fixture
def config() -> Config:
    return Config(
        0,
        1,
        ("replica-0", "replica-1"),
        ("leader-0", "leader-1"),
        ("acceptor-0", "acceptor-1", "acceptor-2"),
    )


@pytest.fixture
def timing() -> Timing:
    return Timing(window=4, max_batch=3)
