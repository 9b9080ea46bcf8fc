"""Fuzzing the collector's ingest endpoint: the real ``python -m collector serve`` process.

Random JSON, mutated reports, deep nesting, huge strings, invalid UTF-8, gzip bombs,
wrong content types and encodings: the answer is never a 5xx, the process never dies,
its memory stays bounded, and what it accepted can be read back (API and HTML pages).
CI runs modest example counts; ``make test PYTEST_ARGS="-m slow"`` runs the long variant.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit

import psutil
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.collectorutil import TOKEN, TOKENS_TEXT, ServerProcess, report, server_process

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
MIB = 1024 * 1024
RSS_GROWTH_MAX = 64 * MIB  # the body limit is 1 MiB; a leak or an unbounded buffer shows here
OK_STATUSES = {200, 202, 400, 401, 403, 413, 415}


def strict_json(data: bytes) -> Any:
    def reject(name: str) -> Any:
        raise AssertionError(f"{name} in a JSON answer")

    return json.loads(data, parse_constant=reject)


class Client:
    """Raw HTTP against the collector: any bytes, any headers."""

    def __init__(self, srv: ServerProcess) -> None:
        parts = urlsplit(srv.url)
        self.srv = srv
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.proc = psutil.Process(srv.proc.pid)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None and not any(k.lower() == "content-length" for k in headers or {}):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if body:
                # a 413 may close the connection before the body is all sent
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send(body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(
        self,
        body: bytes,
        *,
        encoding: str | None = "gzip",
        content_type: str | None = "application/json",
        token: str | None = TOKEN,
        compress: bool = True,
    ) -> tuple[int, bytes]:
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        data = gzip.compress(body, mtime=0) if compress and encoding in ("gzip", "x-gzip") else body
        status, answer = self.request("POST", "/api/v1/reports", data, headers)
        self.assert_alive(status, answer)
        return status, answer

    def assert_alive(self, status: int, answer: bytes) -> None:
        assert self.srv.proc.poll() is None, "the collector died"
        assert status < 500, f"HTTP {status}: {answer[:300]!r}"

    def readable(self, host_id: str) -> None:
        """Everything that shows an accepted report still answers."""
        h = {"Authorization": f"Bearer {TOKEN}"}
        for path in (
            "/api/v1/hosts",
            f"/api/v1/hosts/{quote(host_id, safe='')}/reports?limit=5",
            "/",
            f"/hosts/{quote(host_id, safe='')}",
            "/metrics",
            "/healthz",
        ):
            status, answer = self.request("GET", path, None, h)
            assert status == 200, f"GET {path}: HTTP {status}: {answer[:300]!r}"
            if path.startswith("/api/"):
                strict_json(answer)  # no Infinity/NaN a strict parser would refuse

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    tmp = tmp_path_factory.mktemp("collector-fuzz")
    tokens = tmp / "tokens"
    tokens.write_text(TOKENS_TEXT)
    with server_process("--tokens-file", tokens, "--db", tmp / "fuzz.db") as srv:
        c = Client(srv)
        assert c.post(json.dumps(BASE).encode())[0] == 202
        c.readable("fuzz-host")
        c.baseline = c.rss()  # type: ignore[attr-defined]
        yield c
        assert srv.proc.poll() is None
        grown = c.rss() - c.baseline  # type: ignore[attr-defined]
        assert grown < RSS_GROWTH_MAX, f"collector RSS grew by {grown / MIB:.1f} MiB"
        assert srv.stop() == 0


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
FIELDS = st.sampled_from(
    [
        ("schema",),
        ("report_id",),
        ("agent",),
        ("agent", "host_id"),
        ("agent", "hostname"),
        ("agent", "version"),
        ("started_at",),
        ("finished_at",),
        ("status",),
        ("interval_s",),
        ("dropped_reports",),
        ("checks",),
        ("checks", 0),
        ("checks", 0, "name"),
        ("checks", 0, "status"),
        ("checks", 0, "reason"),
        ("checks", 0, "duration_ms"),
        ("checks", 0, "details"),
        ("checks", 0, "details", "x"),
        ("extra",),
    ]
)


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        if isinstance(target, dict):
            target.pop(path[-1], None)
    else:
        target[path[-1]] = value


def _nested(depth: int, leaf: Any = 1) -> Any:
    out: Any = leaf
    for i in range(depth):
        out = [out] if i % 2 else {"k": out}
    return out


BASE = report("fuzz-host")


@FAST
@given(JSON, st.booleans(), st.sampled_from(["application/json", "text/plain", None, "x/y;q=\x7f"]))
def test_random_json_is_never_a_server_error(
    client: Client, doc: Any, gz: bool, ctype: str | None
) -> None:
    status, _ = client.post(
        json.dumps(doc).encode(), encoding="gzip" if gz else None, content_type=ctype
    )
    assert status in OK_STATUSES


@FAST
@given(FIELDS, JSON, st.booleans())
def test_mutated_reports_are_accepted_or_rejected_cleanly(
    client: Client, path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    _mutate(doc, path, value, delete)
    status, _ = client.post(json.dumps(doc).encode())
    assert status in OK_STATUSES
    if status == 202:
        client.readable(doc["agent"]["host_id"])


@FAST
@given(
    st.binary(max_size=2000),
    st.sampled_from(["gzip", "x-gzip", None, "deflate", "br", "gzip, gzip"]),
)
def test_random_bytes_are_never_a_server_error(
    client: Client, data: bytes, encoding: str | None
) -> None:
    status, _ = client.post(data, encoding=encoding, compress=False)
    assert status in OK_STATUSES


# Number text of every shape: huge and tiny exponents, long mantissas, 64-bit edges.
NUMBER_TEXT = (
    st.integers().map(str)
    | st.sampled_from([str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1)])
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.from_regex(r"-?[1-9][0-9]{0,400}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,5})?", fullmatch=True)
)
NUMBER_FIELDS = st.sampled_from(
    ["interval_s", "dropped_reports", "duration_ms", "details", "details-list"]
)


EDGE_NUMBERS = ["1e999", "-1e999", "1e309", "1" + "0" * 400, "9" * 400 + ".0", str(2**63)]


@FAST
@given(NUMBER_FIELDS, NUMBER_TEXT | st.sampled_from(EDGE_NUMBERS))
@example("interval_s", "1e999")  # was stored as inf: the listing then said Infinity
@example("interval_s", "1" + "0" * 400)  # was a 500 (float() overflow)
@example("details", "-1e999")
def test_numbers_of_any_size_are_stored_or_refused_naming_the_field(
    client: Client, where: str, raw: str
) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    if where in ("interval_s", "dropped_reports"):
        doc[where] = "@N@"
        field = where
    elif where == "duration_ms":
        doc["checks"][1]["duration_ms"] = "@N@"
        field = "checks[1].duration_ms"
    elif where == "details":
        doc["checks"][2]["details"] = {"v": "@N@"}
        field = "checks[2].details.v"
    else:
        doc["checks"][2]["details"] = {"v": [0, {"w": "@N@"}]}
        field = "checks[2].details.v[1].w"
    body = json.dumps(doc).replace('"@N@"', raw).encode()
    status, answer = client.post(body)
    assert status in (202, 400)
    if status == 202:
        client.readable(doc["agent"]["host_id"])
    elif strict_json(answer).get("field") != field:
        # only the schema's own rules may refuse a number that is in range
        assert field in ("interval_s", "dropped_reports", "checks[1].duration_ms"), answer


QUERY_NAMES = st.sampled_from(
    ["limit", "before", "status", "sort", "q", "cursor", "check", "reason"]
) | st.text(max_size=6)
QUERY_VALUES = (
    st.text(max_size=20).map(lambda t: quote(t, safe=""))
    | st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe=""))
    | NUMBER_TEXT
    | st.sampled_from(["", "%", "%zz", "%ED%B3%BF", "+1", "1e3", "0x10", "%D9%A1"])
)
READ_PATHS = st.sampled_from(
    [
        "/api/v1/hosts",
        "/api/v1/hosts/{}/reports",
        "/api/v1/problems",
        "/api/v1/account",
        "/",
        "/hosts/{}",
        "/metrics",
        "/healthz",
        "/api/v1/{}",
        "/{}",
    ]
)


@FAST
@given(
    READ_PATHS,
    st.sampled_from(["fuzz-host", "%ED%B3%BF", "%00", "%FF%FE", "..", "%2F%2F"])
    | st.binary(min_size=1, max_size=30).map(lambda b: quote_from_bytes(b, safe="")),
    st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=4),
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
)
@example("/api/v1/hosts/{}/reports", "fuzz-host", [("before", str(2**63))], "GET")  # was a 500
@example("/hosts/{}", "fuzz-host", [("before", "9" * 400)], "GET")  # was a 500
def test_read_endpoints_never_answer_a_server_error(
    client: Client, template: str, segment: str, params: list[tuple[str, str]], method: str
) -> None:
    query = "&".join(f"{quote(k, safe='')}={v}" for k, v in params)
    path = template.format(segment) + (f"?{query}" if query else "")
    try:
        status, answer = client.request(method, path, None, {"Authorization": f"Bearer {TOKEN}"})
    except http.client.HTTPException:
        status, answer = 400, b"(closed by the server)"
    client.assert_alive(status, answer)
    assert status in {200, 202, 400, 401, 404, 405, 409, 413, 414}, (path, status, answer[:200])
    if status == 200 and method == "GET" and template.startswith("/api/"):
        strict_json(answer)


@pytest.mark.parametrize("depth", [50, 400, 900, 3000, 100_000])
def test_deep_nesting(client: Client, depth: int) -> None:
    # a bare deep array, and a valid report whose details nest that deep
    status, _ = client.post(b"[" * depth + b"]" * depth)
    assert status == 400
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    doc["agent"]["host_id"] = f"deep-{depth}"
    doc["checks"][0]["details"] = {"nested": "HOLE"}
    # built as text: json.dumps itself cannot write what a peer can send
    deep = b'{"k":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)
    status, answer = client.post(json.dumps(doc).encode().replace(b'"HOLE"', deep))
    assert status in (202, 400), answer
    if status == 202:
        client.readable(f"deep-{depth}")


@pytest.mark.parametrize("size", [200_000, 900_000, 2 * MIB])
def test_huge_strings(client: Client, size: int) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    doc["agent"]["host_id"] = f"huge-{size}"
    doc["checks"][0]["details"] = {"blob": "\u00e9" * (size // 2)}
    status, answer = client.post(json.dumps(doc, ensure_ascii=False).encode())
    assert status in (202, 413), answer
    if status == 202:
        client.readable(f"huge-{size}")
    doc["checks"][0]["summary"] = "s" * size  # beyond the schema's summary length
    doc["report_id"] = str(uuid.uuid4())
    assert client.post(json.dumps(doc).encode())[0] in (400, 413)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"schema": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",  # a UTF-8 BOM
        b'{"a": "\\ud800"}',  # a lone surrogate as an escape
        b"\xc0\xaf",
        b"\x00" * 100,
        b'{"a": 1e999999}',
        b'{"a": ' + b"9" * 5000 + b"}",  # beyond Python's int-string limit
        b'{"a": NaN}',
    ],
)
def test_invalid_utf8_and_odd_json(client: Client, raw: bytes) -> None:
    for gz in (True, False):
        status, _ = client.post(raw, encoding="gzip" if gz else None)
        assert status == 400


def test_invalid_utf8_inside_an_otherwise_valid_report(client: Client) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    raw = json.dumps(doc).encode().replace(b"fuzz-host", b"fuzz-\xff\xfe", 1)
    assert client.post(raw)[0] == 400


@pytest.mark.parametrize(
    "field", [("agent", "host_id"), ("agent", "hostname"), ("checks", 0, "summary")]
)
def test_lone_surrogate_escapes_are_rejected_not_retried_forever(
    client: Client, field: tuple[Any, ...]
) -> None:
    # found by fuzzing: a lone "\udcff" in host_id was a 503 (SQLite cannot encode it),
    # which an agent retries for ever
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    _mutate(doc, field, "x\udcffx", delete=False)
    status, answer = client.post(json.dumps(doc).encode())
    assert status == 400, answer
    assert b"surrogate" in answer
    _mutate(doc, field, "pair \U0001f600 ok", delete=False)
    assert client.post(json.dumps(doc).encode())[0] == 202


def test_lone_surrogate_inside_details_is_rejected(client: Client) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    doc["checks"][1]["details"] = {"path": "/etc/\udcff.conf", "\ud800": 1}
    assert client.post(json.dumps(doc).encode())[0] == 400


@pytest.mark.parametrize("inflated", [2 * MIB, 64 * MIB])
def test_gzip_bombs_are_refused_without_inflating(client: Client, inflated: int) -> None:
    before = client.rss()
    zeros = gzip.compress(b"\0" * inflated, compresslevel=9, mtime=0)
    status, _ = client.post(zeros, compress=False)
    assert status == 413
    # a bomb that is valid JSON all the way: '[' then spaces
    bomb = gzip.compress(b"[" + b" " * inflated + b"]", compresslevel=9, mtime=0)
    status, _ = client.post(bomb, compress=False)
    assert status == 413
    # two members (concatenated gzip streams), the second one a bomb
    two = gzip.compress(json.dumps(BASE).encode(), mtime=0) + zeros
    assert client.post(two, compress=False)[0] in (400, 413)
    assert client.rss() - before < 32 * MIB


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Encoding": "gzip", "Content-Length": "10"}, b"\x1f\x8b\x08\x00" + b"\0" * 6),
        ({"Content-Encoding": "gzip", "Content-Length": str(2**63)}, b""),
        ({"Content-Encoding": "gzip", "Content-Length": "-1"}, b""),
        ({"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),
        ({"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"}, b"zz\r\n"),
        ({"Content-Encoding": "\u00e9".encode().decode("latin-1")}, b"{}"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\n\r\n--x--"),
        ({"Authorization": "Bearer " + "a" * 8000}, b"{}"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, b"{}"),
    ],
)
def test_odd_framing_and_headers(client: Client, headers: dict[str, str], body: bytes) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", **headers}
    try:
        status, answer = client.request("POST", "/api/v1/reports", body, headers)
    except (http.client.HTTPException, ConnectionError):
        status, answer = 400, b"(connection closed by the server)"
    client.assert_alive(status, answer)
    assert status in OK_STATUSES | {411, 431}


@pytest.mark.slow
@SLOW
@given(FIELDS, JSON, st.booleans(), st.binary(max_size=4000))
def test_ingest_long(
    client: Client, path: tuple[Any, ...], value: Any, delete: bool, data: bytes
) -> None:
    doc = copy.deepcopy(BASE)
    doc["report_id"] = str(uuid.uuid4())
    _mutate(doc, path, value, delete)
    status, _ = client.post(json.dumps(doc).encode())
    if status == 202:
        client.readable(doc["agent"]["host_id"])
    client.post(data, compress=False)
    client.post(json.dumps(value).encode())
