"""Delivery of one report: the retry policy, the token, gzip, TLS and mTLS, against real servers."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import trustme

from agent.config import CollectorConfig, ConfigError
from agent.daemon.sender import (
    BACKOFF_MAX,
    Sender,
    SendResult,
    Verdict,
    backoff_delay,
    classify,
    load_token,
    parse_retry_after,
    reports_url,
    retry_delay,
)
from tests.daemonproc import free_port
from tests.lab.recorder import Recorder

TOKEN = "sender-test-token-0123456789"
RID = "11111111-2222-4333-8444-555555555555"
BODY = json.dumps({"report_id": RID, "x": "y" * 500}).encode()


@pytest.fixture
def rec() -> Iterator[Recorder]:
    with Recorder(token=TOKEN) as r:
        yield r


def sender(url: str, timeout: float = 2.0, **kw: object) -> Sender:
    return Sender(CollectorConfig(url=url, timeout=timeout, **kw), TOKEN)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0", 0.0), ("86400", 300.0), ("", None), ("-5", None), ("soon", None)],
)
def test_retry_after_seconds(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, time.time()) == expected


def test_retry_after_http_date() -> None:
    now = time.time()
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now) == pytest.approx(10, abs=1)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after(formatdate(now + 86400, usegmt=True), now) == 300.0


def test_backoff_is_exponential_with_full_jitter_between_1s_and_5min() -> None:
    rng = random.Random(7)
    for failures in range(1, 30):
        ceiling = min(BACKOFF_MAX, 2.0**failures)
        samples = [backoff_delay(failures, rng) for _ in range(200)]
        assert all(1.0 <= d <= ceiling for d in samples)
        if ceiling >= 64:  # full jitter: spread over the whole range, not clustered at the top
            assert min(samples) < ceiling * 0.2 and max(samples) > ceiling * 0.8


def test_retry_after_wins_over_a_shorter_backoff() -> None:
    r = SendResult(Verdict.RETRY, 429, "", retry_after=2.0)
    assert all(retry_delay(r, 1) >= 2.0 for _ in range(50))
    assert retry_delay(SendResult(Verdict.RETRY, 503, "", retry_after=0.0), 1) == 1.0


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (400, Verdict.DEAD),
        (413, Verdict.DEAD),
        (422, Verdict.DEAD),
        (401, Verdict.AUTH),
        (403, Verdict.AUTH),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (501, Verdict.UNEXPECTED),
        (404, Verdict.UNEXPECTED),
        (302, Verdict.UNEXPECTED),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_reports_url() -> None:
    assert reports_url("https://c.example:8443") == "https://c.example:8443/api/v1/reports"
    assert reports_url("https://c.example/api/v1/reports/") == "https://c.example/api/v1/reports"


def test_token_from_file_or_systemd_credential(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    assert load_token(CollectorConfig(url="http://x", token_file=f), {}) == TOKEN
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "collector-token").write_text("from-credential")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load_token(CollectorConfig(url="http://x"), env) == "from-credential"
    # an explicit token_file wins over the credential
    assert load_token(CollectorConfig(url="http://x", token_file=f), env) == TOKEN
    assert load_token(CollectorConfig(url="http://x"), {}) is None
    assert (
        load_token(CollectorConfig(url="http://x"), {"CREDENTIALS_DIRECTORY": "/nonexistent"})
        is None
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\n \n", "empty"),
        (b"abc def-SECRETPART", "spaces"),
        (b"\xff\xfe", "ASCII"),
    ],
)
def test_bad_token_files_name_the_key_not_the_token(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    f = tmp_path / "token"
    f.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_token(CollectorConfig(url="http://x", token_file=f), {})
    assert e.value.key == "[collector] token_file" and problem in str(e.value)
    assert "SECRETPART" not in str(e.value)


async def test_delivered_gzip_with_content_length_and_bearer(rec: Recorder) -> None:
    s = sender(rec.url)
    try:
        result = await s.send(BODY, time.time(), RID)
    finally:
        await s.close()
    assert result == SendResult(Verdict.DELIVERED, 202)
    attempt = rec.attempts[0]
    assert attempt.headers["Authorization"] == f"Bearer {TOKEN}"
    assert attempt.headers["Content-Encoding"] == "gzip"
    assert "Transfer-Encoding" not in attempt.headers
    assert int(attempt.headers["Content-Length"]) < len(BODY)
    assert attempt.report == json.loads(BODY)


async def test_failure_answers_are_classified_and_the_token_is_scrubbed(rec: Recorder) -> None:
    rec.answer(503, {"Retry-After": "7"})
    rec.answer(400, body=f"bad request; you sent Authorization: Bearer {TOKEN}")
    rec.answer(401)
    rec.answer(404)
    s = sender(rec.url)
    try:
        results = [await s.send(BODY, time.time(), RID) for _ in range(4)]
    finally:
        await s.close()
    assert [r.verdict for r in results] == [
        Verdict.RETRY,
        Verdict.DEAD,
        Verdict.AUTH,
        Verdict.UNEXPECTED,
    ]
    assert results[0].retry_after == 7.0 and results[0].status == 503
    assert "bad request" in results[1].error
    assert all(TOKEN not in r.error for r in results)


async def test_slow_collector_times_out(rec: Recorder) -> None:
    rec.delay = 1.5
    s = sender(rec.url, timeout=0.3)
    try:
        result = await s.send(BODY, time.time(), RID)
    finally:
        await s.close()
    assert result.verdict is Verdict.RETRY and "timed out" in result.error


async def test_collector_down_is_retried() -> None:
    s = sender(f"http://127.0.0.1:{free_port()}")
    try:
        result = await s.send(BODY, time.time(), RID)
    finally:
        await s.close()
    assert result.verdict is Verdict.RETRY and result.status is None
    assert "Connect" in result.error


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("agent.test")
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    return {"dir": d, "server_ctx": ctx}


async def test_mutual_tls_with_ca_file(pki: dict[str, object]) -> None:
    d = pki["dir"]
    assert isinstance(d, Path)
    ctx = pki["server_ctx"]
    assert isinstance(ctx, ssl.SSLContext)
    with Recorder(token=TOKEN, ssl_context=ctx) as rec:
        good = sender(
            rec.url,
            ca_file=d / "ca.pem",
            client_cert=d / "client.pem",
            client_key=d / "client.key",
        )
        no_client_cert = sender(rec.url, ca_file=d / "ca.pem")
        untrusted = sender(rec.url)  # system trust store: the lab CA is not in it
        try:
            ok = await good.send(BODY, time.time(), RID)
            refused = await no_client_cert.send(BODY, time.time(), RID)
            unverified = await untrusted.send(BODY, time.time(), RID)
        finally:
            for s in (good, no_client_cert, untrusted):
                await s.close()
    assert ok.verdict is Verdict.DELIVERED
    assert refused.verdict is Verdict.RETRY
    assert unverified.verdict is Verdict.RETRY and "certificate verify failed" in unverified.error
    assert "set [collector] ca_file" in unverified.error  # the fix, named
    assert len(rec.accepted) == 1


def test_bad_tls_files_are_config_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError) as e:
        Sender(CollectorConfig(url="https://c.test", ca_file=junk), None)
    assert e.value.key == "[collector] ca_file"
    with pytest.raises(ConfigError) as e:
        Sender(CollectorConfig(url="https://c.test", client_cert=junk, client_key=junk), None)
    assert e.value.key == "[collector] client_cert"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"",  # closes without a word
    ],
)
async def test_a_collector_speaking_garbage_is_a_retry_not_a_crash(answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = sender(f"http://127.0.0.1:{port}", timeout=2)
    try:
        result = await s.send(BODY, time.time(), RID)
    finally:
        await s.close()
        server.close()
        await server.wait_closed()
    assert result.verdict is Verdict.RETRY, result
