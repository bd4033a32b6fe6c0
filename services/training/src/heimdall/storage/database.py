"""Database connection: fail-fast engines, automatic migrations and the seeded receiver network."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, Insert, create_engine, event, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from heimdall.errors import ServiceUnavailableError, UserError
from heimdall.settings import redact_text, redact_url
from heimdall.stations import NW_ITALY_STATIONS, Station
from heimdall.storage.schema import WebSDRStation

log = logging.getLogger("heimdall.storage")


class DatabaseError(ServiceUnavailableError):
    """The database cannot be reached or used; the message names the URL without its password."""


class DatabaseURLError(UserError, DatabaseError):
    """The database URL (HEIMDALL_DATABASE_URL or the data folder) is not one Heimdall can use."""


class DatabaseMissingError(DatabaseError):
    """``open_database(…, create=False)``: the embedded SQLite file does not exist (nothing stored yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no database at {path} (nothing imported or simulated yet)")


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for an in-memory or non-SQLite database."""
    url = _normalise(url)
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def _normalise(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return url


def make_engine(url: str, connect_timeout_s: float = 5.0) -> Engine:
    """An engine that fails fast instead of hanging on an unreachable or silent server.

    PostgreSQL: one connection attempt per host of the URL, bounded by libpq's ``connect_timeout``,
    which takes whole seconds with a 2 s minimum: ``max(2, ⌈connect_timeout_s⌉)``. psycopg applies it
    to the whole handshake, so a listener that accepts and never answers fails within that too.
    SQLite: ``connect_timeout_s`` is how long to wait for a lock.
    """
    url = _normalise(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseURLError(
                    f"cannot create the folder {folder} of database {redact_url(url)}: {exc.strerror or exc}"
                ) from None
        engine = create_engine(url, connect_args={"timeout": connect_timeout_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url,
            connect_args={"connect_timeout": max(2, math.ceil(connect_timeout_s))},
            pool_pre_ping=True,
        )
    raise DatabaseURLError(f"unsupported database URL {redact_url(url)!r}: use sqlite:/// or postgresql://")


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("heimdall.storage") / "migrations"))
    return cfg


SQLITE_WRITE_WAIT_MS = 60_000  # a concurrent writer holds SQLite's write lock for one batch
MIGRATION_LOCK_ID = 0x48454D44  # one PostgreSQL advisory lock ("HEMD") for schema changes
SQLITE_MIGRATION_WAIT_MS = 60_000


def upgrade_schema(engine: Engine, stations: Iterable[Station] = NW_ITALY_STATIONS) -> str:
    """Apply every pending migration and seed the missing receivers; returns the revision now in force.

    Two processes opening a fresh database at once (two `heimdall simulate` runs) would both create the
    tables; so migration and seeding run in one transaction that first takes a lock — a PostgreSQL
    advisory transaction lock, SQLite's write lock (`BEGIN IMMEDIATE`) — and the second process finds
    the schema at head and the stations present.
    """
    cfg = _alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_MIGRATION_WAIT_MS}")
            conn.commit()
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        seed_stations(conn, stations)
        revision = MigrationContext.configure(conn).get_current_revision() or ""
        conn.commit()
    return revision


def seed_stations(conn: Connection, stations: Iterable[Station] = NW_ITALY_STATIONS) -> int:
    """Insert the receivers that are missing (by id); existing rows are left alone. Returns how many.

    Runs inside :func:`upgrade_schema`'s locked transaction, so concurrent first opens cannot both insert.
    """
    existing = set(conn.scalars(select(WebSDRStation.id)))
    rows = [
        {
            "id": s.id,
            "name": s.name,
            "url": s.url,
            "latitude": s.latitude,
            "longitude": s.longitude,
            "altitude_asl": s.altitude_asl,
            "frequency_min_hz": s.frequency_min_hz,
            "frequency_max_hz": s.frequency_max_hz,
            "is_active": s.is_active,
        }
        for s in stations
        if s.id not in existing
    ]
    if rows:
        conn.execute(insert(WebSDRStation), rows)
    return len(rows)


@dataclass
class Database:
    """An engine with its schema up to date and its session factory."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(
    url: str, connect_timeout_s: float = 5.0, migrate: bool = True, create: bool = True
) -> Database:
    """Connect (failing fast), migrate to head and seed the network: ready for reads and writes.

    ``create=False`` (read-only commands): an embedded SQLite file that does not exist is not created
    (nor its folder); :class:`DatabaseMissingError` says so instead.
    """
    path = sqlite_path(url)
    if not create and path is not None and not path.is_file():
        raise DatabaseMissingError(path)
    engine = make_engine(url, connect_timeout_s)
    deadline = time.monotonic() + SQLITE_MIGRATION_WAIT_MS / 1000
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            if migrate:
                upgrade_schema(engine)
            break
        except SQLAlchemyError as exc:
            if path is not None and _sqlite_busy(exc) and time.monotonic() < deadline:
                time.sleep(SQLITE_BUSY_RETRY_S)
                continue
            engine.dispose()
            reason = (
                str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
            )
            raise DatabaseError(f"cannot use database {redact_url(url)}: {redact_text(reason)}") from None
    return Database(url, engine, sessionmaker(engine, expire_on_commit=False))


SQLITE_BUSY_RETRY_S = 0.05


def _sqlite_busy(exc: SQLAlchemyError) -> bool:
    """SQLITE_BUSY that the busy timeout does not cover.

    In WAL mode a connection opening while the last one closes (it takes an exclusive lock to clean up
    the WAL) or while another converts the file to WAL can get "database is locked" at once, without the
    busy handler (sqlite.org/wal.html, "Sometimes queries return SQLITE_BUSY"): a first open retries.
    """
    return "database is locked" in str(getattr(exc, "orig", exc))


def insert_ignoring_conflicts(db: Database, table: type) -> Insert:
    """INSERT that skips rows clashing with a unique key (a concurrent writer's identical row).

    ``ON CONFLICT DO NOTHING`` of SQLite and PostgreSQL, chosen by the engine's dialect; add
    ``.returning(…)`` to tell whether the row was inserted (a row comes back) or already there (none).
    """
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise DatabaseError(f"conflict-tolerant inserts are not supported on the {dialect!r} database dialect")
