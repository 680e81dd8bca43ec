"""Gateway settings from the command line (no Ray): the bind address rules and the
access options."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import pytest

from pmmc_ray.gateway.schema import ESCAPED_MAX_BODY_BYTES
from pmmc_ray.gateway.server import GatewaySettings
from pmmc_ray.gateway_cli import add_gateway_options, settings_from


@pytest.mark.parametrize(
    "host,single",
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("0.0.0.0", None),
        ("::", None),
        ("node", None),  # each node's own address
        ("localhost", None),
        ("10.1.2.3", "10.1.2.3"),  # exists on one node: refused on a multi-node cluster
        ("[fd00::5]", "[fd00::5]"),
    ],
)
def test_which_bind_addresses_exist_on_one_node_only(host, single):
    assert GatewaySettings(host=host).single_node_address() == single


def test_access_options_reach_the_settings_and_survive_the_trip_through_ray():
    p = argparse.ArgumentParser()
    add_gateway_options(p, prefix="gateway-")
    args = p.parse_args(
        [
            "--gateway-host",
            "node",
            "--gateway-allow-host",
            "gw.internal",
            "--gateway-allow-host",
            "10.0.0.9",
            "--gateway-allow-origin",
            "https://app.example",
            "--gateway-max-body-bytes",
            str(ESCAPED_MAX_BODY_BYTES),
        ]
    )
    s = settings_from(args, "gateway-")
    assert s.host == "node" and s.allow_hosts == ("gw.internal", "10.0.0.9")
    assert s.allow_origins == ("https://app.example",)
    assert s.max_body_bytes == ESCAPED_MAX_BODY_BYTES
    # Ray passes the settings to the actor as a dict (tuples become lists in JSON).
    again = GatewaySettings(
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}
    )
    assert again == s
