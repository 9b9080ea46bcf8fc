"""Locality: interface addresses (psutil) and loopback."""

from __future__ import annotations

import pytest

from agent.fqdn.locality import interface_addresses, is_local, normalize


def test_interface_addresses_in_the_test_namespace(netns_isolated: None) -> None:
    # make test runs in a namespace with only lo up
    assert interface_addresses() == frozenset({"127.0.0.1", "::1"})


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),  # Debian's hosts entry for the host's own name
        ("::1", True),
        ("::ffff:127.0.0.5", True),
        ("192.0.2.10", True),  # listed below as an interface address
        ("::ffff:192.0.2.10", True),
        ("192.0.2.11", False),
        ("2001:db8::1", False),
        ("fe80::1%eth0", True),
        ("not an address", False),
    ],
)
def test_is_local(address: str, local: bool) -> None:
    assert is_local(address, {"192.0.2.10", "fe80::1"}) is local


def test_normalize_spells_like_getaddrinfo() -> None:
    assert normalize("2001:DB8:0:0::1") == "2001:db8::1"
    assert normalize("::ffff:a09:909") == "::ffff:10.9.9.9"
    assert normalize("fe80::1%lo") == "fe80::1"
    assert normalize("127.1") is None
