"""The PostgreSQL backend: several collector processes or machines on one database.

The collectors are stateless peers. Idempotency is the ``UNIQUE (host_id, report_id)``
constraint (``INSERT ... ON CONFLICT DO NOTHING RETURNING`` tells each writer which rows were
its own); each process commits its ingest in groups on its writer thread, as with SQLite;
migrations take a transaction-level advisory lock, so collectors started together migrate
once; retention runs in whichever collector holds a session-level advisory lock.

Driver: psycopg 3 (libpq). Measured against asyncpg with bench/pg_drivers.py (group commits of
32 reports, the collector's own statements; figures in docs/collector.md): psycopg's
pipelined ``executemany`` and its synchronous API on the writer thread keep the store one
piece of code for both backends (the same queries, the same writer and reader threads; libpq
releases the GIL while it waits), which asyncpg, asyncio-only with its own ``$n`` placeholders,
would split in two. The password never goes in the URL (``config show`` and the logs print
it): it comes from ``[store] password_file``, a systemd credential, or libpq's own
``PGPASSFILE``/``~/.pgpass``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

from collector.store import Cursor, StoreError
from collector.store_url import redact

# pg_advisory_lock keys: arbitrary, fixed, this application's own (ASCII "acmepf" + n)
MIGRATION_LOCK = 0x61636D65_7066_0001
JOB_LOCKS = {"retention": 0x61636D65_7066_0002}
CONNECT_TIMEOUT_S = 10


@functools.lru_cache(maxsize=512)
def to_format(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` becomes ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(to_format(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(to_format(sql), rows)

    def begin(self) -> None:
        self.raw.execute("BEGIN")

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        """The server end is gone: this connection will never work again."""
        return bool(self.raw.broken or self.raw.closed)

    def close(self) -> None:
        self.raw.close()


class PostgresBackend:
    dialect = "postgresql"

    def __init__(self, url: str, password_file: Path | None = None) -> None:
        self.url = url
        self.password_file = password_file

    def describe(self) -> str:
        return redact(self.url)

    def _password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text("utf-8").strip()
        except OSError as e:
            raise StoreError(f"[store] password_file {self.password_file}: {e.strerror}") from None

    def _connect(self, **options: Any) -> PgConn:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}
        password = self._password()
        if password is not None:
            kwargs["password"] = password
        kwargs.update(options)
        try:
            return PgConn(psycopg.connect(self.url, **kwargs))
        except psycopg.Error as e:
            # libpq's messages name host, port and user, never the password
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None

    def connect(self) -> PgConn:
        return self._connect(application_name="acme-preflight-collector")

    def reader(self) -> PgConn:
        return self._connect(
            application_name="acme-preflight-collector-reader",
            options="-c default_transaction_read_only=on",
        )

    def schema_version(self, conn: Any) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, conn: Any, version: int) -> None:
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))

    def migration_lock(self, conn: Any) -> None:
        # held until the migration transaction ends; DDL is transactional in PostgreSQL
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    @contextlib.contextmanager
    def write_turn(self) -> Iterator[None]:
        """Row locks and the unique constraint order concurrent writers: no turn to take."""
        yield

    def try_job(self, conn: Any, name: str) -> bool:
        # session-level: held across the job's many short transactions on this connection
        return bool(
            conn.execute("SELECT pg_try_advisory_lock(?)", (JOB_LOCKS[name],)).fetchone()[0]
        )

    def end_job(self, conn: Any, name: str) -> None:
        conn.execute("SELECT pg_advisory_unlock(?)", (JOB_LOCKS[name],))

    def close(self) -> None:
        """Connections belong to the writer and readers, which close them."""
