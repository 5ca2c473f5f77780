"""The shared store's database: reaching it, its schema and migrations, its errors.

With the rest of :mod:`seedance_watch.ledger.postgres`, the only code that knows
psycopg (docs/design.md, "The shared store").  Three things live here:

* :class:`Database`: a URL and how to show it (never with its password: every
  message goes through :meth:`Database.scrub`, and the password is registered with
  the log redaction as soon as the URL is read).
* :func:`migrate`: the versioned SQL files of ``ledger/postgres/migrations`` (``0001_jobs.sql``,
  ...), applied in order inside one transaction under an advisory lock, each
  recorded in ``seedance_watch.schema_migrations``; idempotent (a database at the
  code's version is left alone without taking the lock), and a schema newer than
  the code is refused (:class:`~seedance_watch.errors.SchemaTooNew`).
* :func:`translate`: psycopg's exceptions mapped once into our tree -- the
  database out of reach is :class:`~seedance_watch.errors.StoreUnavailable`
  (transient: nothing latched), anything else the server refused a
  :class:`~seedance_watch.errors.DurabilityError` for a write or a
  :class:`~seedance_watch.errors.StateError` for a read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from seedance_watch.errors import (
    DurabilityError,
    SchemaTooNew,
    StateError,
    StoreUnavailable,
)
from seedance_watch.logs import redact_text, redact_url, register_secret

__all__ = [
    "MIGRATION_LOCK",
    "SCHEMA",
    "Database",
    "Migration",
    "connect",
    "migrate",
    "migrations",
    "probe",
    "schema_version",
    "translate",
]

log = structlog.get_logger(__name__)

#: Every table of the store lives in this schema (``DROP SCHEMA ... CASCADE`` resets it).
SCHEMA = "seedance_watch"
#: The ``pg_advisory_lock`` key that serialises migrations ("seedance" in ASCII).
MIGRATION_LOCK = 0x7365_6564_616E_6365
#: Connecting gives up after this long (libpq's ``connect_timeout``, whole seconds).
CONNECT_TIMEOUT = 10

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
# Out of reach rather than refusing: connection exceptions (class 08), the server
# shutting down or starting (57P01..57P03), too many connections (53300).
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


@dataclass(frozen=True, slots=True)
class Database:
    """Where the shared store is: a ``postgresql://`` URL, shown without its password."""

    url: str

    def __post_init__(self) -> None:
        for secret in self._passwords():
            register_secret(secret)

    def _passwords(self) -> list[str]:
        parts = urlsplit(self.url)
        found: list[str] = []
        try:
            if parts.password:
                found += [parts.password, unquote(parts.password)]
        except ValueError:
            pass
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
        return found

    @property
    def shown(self) -> str:
        """The URL for messages and logs: its password masked."""
        return redact_url(self.url)

    def scrub(self, text: str) -> str:
        """``text`` (a driver's message) without the password, whatever quotes it, on
        one line (libpq's messages run over several, indented with tabs)."""
        for secret in self._passwords():
            text = text.replace(secret, "***")
        return redact_text(" ".join(text.split()))


def connect(database: Database, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A new connection; raises :class:`StoreUnavailable` when the database cannot be
    reached or refuses us (the message names it without the password)."""
    try:
        conn = psycopg.connect(
            database.url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="seedance-watch",
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"cannot connect to the database {database.shown}: {database.scrub(str(exc).strip())}"
        ) from None
    ensure_synchronous_commit(conn)
    return conn


def ensure_synchronous_commit(conn: psycopg.Connection[Any]) -> None:
    """A commit returns once it is durable: ``synchronous_commit`` off (a server's or
    a role's setting) is turned back on for this session; ``local``, ``remote_write``,
    ``remote_apply`` (replication) are kept."""
    row = conn.execute("SHOW synchronous_commit").fetchone()
    if row is not None and row[0] == "off":
        conn.execute("SET synchronous_commit = on")
    if not conn.autocommit:
        conn.commit()


def translate(exc: BaseException, database: Database, doing: str, *, write: bool) -> StateError:
    """Our error for a psycopg failure while ``doing`` (``"write job j1"``...).

    The one mapping table of the edge: out of reach (connection lost, refused,
    timed out, the server shutting down, a pool that found no connection in time)
    is :class:`StoreUnavailable`; anything else the server answered is a
    :class:`DurabilityError` for a write (disk full, read-only, I/O error: the
    store latches it) and a :class:`StateError` for a read.
    """
    message = database.scrub(str(exc).strip()) or type(exc).__name__
    if _unavailable(exc):
        return StoreUnavailable(
            f"the database {database.shown} is out of reach ({doing}): {message}"
        )
    if write:
        return DurabilityError(f"the database {database.shown} refused to {doing}: {message}")
    return StateError(f"the database {database.shown} failed to {doing}: {message}")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES
    return False


# --- migrations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """The migration files shipped with the code, in order (versions 1, 2, ... exactly)."""
    folder = resources.files("seedance_watch.ledger.postgres").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise AssertionError(f"migrations must be numbered 1, 2, ...: {[m.name for m in found]}")
    return tuple(found)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The version the database's schema is at (0: no store there yet)."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_migrations",)
    ).fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations")
    version = found.fetchone()
    return int(version[0]) if version is not None else 0


#: The oldest server the store runs on (``server_version_num``).
OLDEST_SERVER = 130000


def probe(database: Database) -> str:
    """What ``seedance-watch check`` says of the database, after one connection and
    two reads: the server's version and the schema's.  Raises
    :class:`StoreUnavailable` (out of reach, or refusing us), :class:`SchemaTooNew`,
    or :class:`StateError` for a server older than PostgreSQL 13."""
    conn = connect(database)
    try:
        server = conn.info.server_version
        version = schema_version(conn)
    except psycopg.Error as exc:
        raise translate(exc, database, "read the schema version", write=False) from None
    finally:
        conn.close()
    shown = f"{server // 10000}.{server % 10000}"
    if server < OLDEST_SERVER:
        raise StateError(
            f"the database {database.shown} runs PostgreSQL {shown}; seedance-watch needs 13 "
            "or newer"
        )
    refuse_newer(version, database)
    known = len(migrations())
    schema = (
        "no seedance-watch tables yet (the first daemon creates them)"
        if version == 0
        else f"schema version {version}"
        + ("" if version == known else f" (the daemon migrates it to {known})")
    )
    return f"the database {database.shown} answers: PostgreSQL {shown}, {schema}"


def refuse_newer(version: int, database: Database) -> None:
    """Raise :class:`SchemaTooNew` when ``version`` is beyond the code's migrations."""
    known = len(migrations())
    if version > known:
        raise SchemaTooNew(
            f"the database {database.shown} holds seedance-watch schema version {version}, "
            f"newer than this seedance-watch knows ({known}): a newer version of it migrated "
            "the database; upgrade this host (every host sharing a database runs the same "
            "version)"
        )


def migrate(conn: psycopg.Connection[Any], database: Database) -> int:
    """Bring the schema to the code's version; returns it.

    Nothing is locked when the schema is already there (every start of every host);
    otherwise, under ``pg_advisory_lock(MIGRATION_LOCK)``, the missing files are
    applied and recorded in one transaction: a second host starting at the same
    moment waits, then finds them applied.  ``conn`` must be in autocommit mode.
    """
    known = len(migrations())
    try:
        version = schema_version(conn)
        refuse_newer(version, database)
        if version == known:
            return version
        # The lock is taken before the transaction begins: a transaction that began
        # while another host migrated could read the catalogs as they were before.
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            with conn.transaction():
                version = schema_version(conn)
                refuse_newer(version, database)
                if version == 0:
                    _create_base(conn)
                for migration in migrations()[version:]:
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    log.info("store.migrated", version=migration.version, migration=migration.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    except psycopg.Error as exc:
        raise translate(exc, database, "migrate the schema", write=True) from None
    return known


def _create_base(conn: psycopg.Connection[Any]) -> None:
    """The schema and its version table.  ``CREATE SCHEMA`` needs the CREATE right on the
    database, so it runs only when the schema is missing (a DBA may have made it)."""
    found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone()
    if found is None:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""
    )


def missing_table(exc: BaseException) -> bool:
    """True for the error of a query on a store that does not exist (yet)."""
    return isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName)
