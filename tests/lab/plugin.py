"""pytest plugin that registers the lab fixtures (see tests/lab/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.base import LabThread
from tests.lab.certcentral import CertCentralLab
from tests.lab.digicert import DigicertLab
from tests.lab.netns import assert_netns_isolated
from tests.lab.pki import LabPki, make_pki
from tests.lab.postgres import PostgresServer
from tests.lab.postgres import running as postgres_running

# Cleared for every test, httpx-style: nothing a developer's shell exports may route a
# test through a proxy or swap its trust store.
ENV_VARS = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


def clear_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)


@pytest.fixture(autouse=True)
def _clean_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_network_env(monkeypatch)


@pytest.fixture(scope="session")
def lab_pki() -> LabPki:
    """The lab's CAs and leaf certs (see tests/lab/pki.py), made once per session."""
    return make_pki()


@pytest.fixture
def netns_isolated() -> None:
    """Fails the test unless it runs in a private network namespace (only ``lo``)."""
    assert_netns_isolated()


@pytest.fixture
def lab_thread() -> Iterator[LabThread]:
    """A background event loop for lab servers in sync tests; stops them at teardown."""
    with LabThread() as lab:
        yield lab


@pytest.fixture
def digicert_lab(
    lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DigicertLab]:
    """DigiCert on loopback: HTTPS on 127.0.0.2:443 (acme/daas.digicert.com), DNS on
    127.0.0.53:53 resolving both names to 127.0.0.2, SSL_CERT_FILE = the lab CA bundle.

    Runs on a background loop, so sync tests and subprocesses can use it too.
    """
    assert_netns_isolated()  # it binds the real ports 443 and 53
    workdir: Path = tmp_path_factory.mktemp("digicert-lab")
    with DigicertLab(lab_pki, workdir) as lab:
        monkeypatch.setenv("SSL_CERT_FILE", str(lab.ca_bundle))
        yield lab


@pytest.fixture
def certcentral_lab(
    lab_pki: LabPki, lab_thread: LabThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CertCentralLab]:
    """The CertCentral stand-in on 127.0.0.30 (a free port) with every fixture account;
    ``certcentral_lab.ca_bundle`` is the CA file to put in ``[certcentral] ca_file``."""
    assert_netns_isolated()
    lab = lab_thread.start(CertCentralLab(lab_pki))
    lab.ca_bundle = lab_pki.write_bundle(tmp_path_factory.mktemp("certcentral") / "ca.pem")
    yield lab


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (unix socket, SCRAM password); see postgres.py."""
    with postgres_running() as server:
        yield server


@dataclass(frozen=True)
class StoreTarget:
    """Where a collector under test stores: ``kind`` "sqlite" (a file) or "postgresql"."""

    kind: str
    url: str
    password_file: Path | None = None
    server: PostgresServer | None = None


@pytest.fixture(scope="session")
def _postgres_contract_db(postgres: PostgresServer) -> str:
    """One migrated database that every contract test empties and reuses (a new database per
    test cost more than the tests themselves)."""
    from collector import store

    db = postgres.create_database()
    store.prepare(store.open_backend(postgres.url(db), password_file=postgres.password_file))
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> StoreTarget:
    """Each backend in turn: contract tests take this to run against both.

    PostgreSQL: the session's contract database, every table emptied (ids restarted) and the
    schema version reset before each test. Tests of creating or migrating a database make
    their own with ``postgres.create_database()``.
    """
    if request.param == "sqlite":
        return StoreTarget("sqlite", str(tmp_path_factory.mktemp("store") / "collector.db"))
    server: PostgresServer = request.getfixturevalue("postgres")
    db: str = request.getfixturevalue("_postgres_contract_db")
    _empty(server, db)
    return StoreTarget("postgresql", server.url(db), server.password_file, server)


def _empty(server: PostgresServer, db: str) -> None:
    import psycopg

    from collector import store

    password = server.password_file.read_text().strip()
    with psycopg.connect(server.url(db), password=password, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_version'"
            )
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")  # type: ignore[call-overload]
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (store.SCHEMA_VERSION,))
