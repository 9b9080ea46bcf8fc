"""Guard for tests that bind the real ports or address anything beyond loopback."""

from __future__ import annotations

import socket

import pytest


def network_links() -> list[str]:
    """The links of *this* network namespace, as the kernel reports them.

    (Not /sys/class/net: after a bare ``unshare --net`` it still shows the namespace
    that mounted sysfs, i.e. the host's links.)
    """
    return sorted(name for _, name in socket.if_nameindex())


def assert_netns_isolated() -> None:
    """Fail the test unless only ``lo`` exists (run it with ``make test``)."""
    links = network_links()
    if links != ["lo"]:
        pytest.fail(
            f"not in an isolated network namespace (links: {', '.join(links)}); "
            "run the tests with `make test` (unshare --net)",
            pytrace=False,
        )
