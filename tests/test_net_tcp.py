"""agent.net.tcp: connect outcomes from real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from agent.net.tcp import tcp_connect
from tests.lab.endpoints import BlackholeEndpoint, SilentEndpoint
from tests.lab.netns import assert_netns_isolated


async def test_connects_and_closes() -> None:
    async with SilentEndpoint("127.0.0.7", 0) as server:
        result, stream = await tcp_connect("127.0.0.7", server.port, 1.0)
        assert result.ok and result.family == "ipv4" and stream is not None
        assert result.to_dict()["outcome"] == "connected"
        stream.writer.write(b"hi")
        await stream.writer.drain()
        await stream.close()
        assert stream.closed
        for _ in range(50):
            if server.received:
                break
            await asyncio.sleep(0.01)
    assert server.connections == 1 and server.received == 2


async def test_nagle_is_off() -> None:
    # a request right after the TLS Finished must not wait for the server's delayed ACK
    async with SilentEndpoint("127.0.0.7", 0) as server:
        _, stream = await tcp_connect("127.0.0.7", server.port, 1.0)
        assert stream is not None
        sock = stream.writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        await stream.close()


@pytest.mark.parametrize("ip", ["127.0.0.3", "::1"])
async def test_refused_when_nothing_listens(ip: str) -> None:
    result, stream = await tcp_connect(ip, 443, 1.0)
    assert stream is None
    assert result.error == "refused"
    assert result.family == ("ipv6" if ":" in ip else "ipv4")
    assert "refused" in result.message


@pytest.mark.parametrize("ip", ["10.255.255.1", "2001:db8::1"])
async def test_unreachable_without_a_route(ip: str) -> None:
    assert_netns_isolated()  # only lo: the kernel has no route, nothing is sent
    result, stream = await tcp_connect(ip, 443, 1.0)
    assert stream is None
    assert result.error == "unreachable", result


async def test_silent_drop_is_a_timeout_within_budget() -> None:
    async with BlackholeEndpoint("127.0.0.5", 0) as hole:
        started = time.monotonic()
        result, stream = await tcp_connect(hole.host, hole.port, 0.3)
        took = time.monotonic() - started
    assert stream is None
    assert result.error == "timeout"
    assert 0.29 <= took < 0.45
    assert "no answer" in result.message


async def test_not_an_ip_is_an_error_not_a_lookup() -> None:
    result, stream = await tcp_connect("acme.digicert.com", 443, 1.0)
    assert stream is None and result.error == "error"
