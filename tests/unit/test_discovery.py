"""What the router takes from EndpointSlices (scoring/router/discovery.py), as pure functions:
which addresses are ready pods, on which port, and which Service a deployment URL names."""

from __future__ import annotations

from typing import Any

import pytest

from scoring.router.discovery import Service, ready_addresses, service_of
from scoring.router.upstream import Target

pytestmark = pytest.mark.router


def endpoint(address: str, **conditions: Any) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


def test_ready_pods_on_the_slice_port_sorted_and_merged_across_slices() -> None:
    slices = {
        "a": {
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 5001, "protocol": "TCP"}],
            "endpoints": [
                endpoint("10.0.0.9", ready=True),
                endpoint("10.0.0.3"),  # no condition: ready, as the API says
                endpoint("10.0.0.4", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.5", ready=False),
            ],
        },
        "b": {
            "addressType": "IPv4",
            "ports": [{"port": 5001}],  # protocol defaults to TCP
            "endpoints": [endpoint("10.0.0.1", ready=True), endpoint("10.0.0.9", ready=True)],
        },
    }
    assert ready_addresses(slices, 80) == [
        ("10.0.0.1", 5001),
        ("10.0.0.3", 5001),
        ("10.0.0.9", 5001),
    ]


def test_slices_the_router_cannot_use_are_skipped() -> None:
    two_ports = [{"name": "http", "port": 5001}, {"name": "metrics", "port": 9090}]
    slices = {
        "fqdn": {"addressType": "FQDN", "ports": [{"port": 5001}], "endpoints": [endpoint("x")]},
        "no-port": {"addressType": "IPv4", "ports": [], "endpoints": [endpoint("10.0.0.1")]},
        "udp": {
            "addressType": "IPv4",
            "ports": [{"port": 53, "protocol": "UDP"}],
            "endpoints": [endpoint("10.0.0.2")],
        },
        "two-ports": {"addressType": "IPv6", "ports": two_ports, "endpoints": [endpoint("fd::3")]},
        "empty": {"addressType": "IPv4", "ports": [{"port": 5001}], "endpoints": None},
    }
    assert ready_addresses(slices, 1234) == []
    # With several ports, the one equal to the Service address's port is taken.
    assert ready_addresses(slices, 9090) == [("fd::3", 9090)]


@pytest.mark.parametrize(
    ("url", "service"),
    [
        ("http://diabetes-blue.ns1.svc:5001", Service("ns1", "diabetes-blue")),
        ("http://diabetes-blue.ns1.svc.cluster.local:5001", Service("ns1", "diabetes-blue")),
        ("http://diabetes-blue.ns1:5001", Service("ns1", "diabetes-blue")),
        ("http://diabetes-blue:5001", Service("default-ns", "diabetes-blue")),
        ("http://10.96.0.12:5001", None),
        ("http://[fd00::1]:5001", None),
    ],
)
def test_the_service_a_deployment_url_names(url: str, service: Service | None) -> None:
    assert service_of(Target.from_url("blue", url), "default-ns") == service
