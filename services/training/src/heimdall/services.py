"""Opening the configured database and object store together, failing fast with clear errors."""

from __future__ import annotations

from dataclasses import dataclass

from heimdall.settings import Settings
from heimdall.storage.database import Database, open_database
from heimdall.storage.objectstore import ObjectStore, open_object_store


@dataclass
class Services:
    """The backends a command works against, resolved from Settings."""

    settings: Settings
    db: Database
    store: ObjectStore

    def close(self) -> None:
        self.db.dispose()


def open_services(settings: Settings | None = None) -> Services:
    """Connect to the database (migrating it) and the object store named by the settings."""
    settings = settings or Settings()
    db = open_database(settings.resolved_database_url, settings.connect_timeout_s)
    store = open_object_store(
        settings.resolved_object_store,
        settings.s3_endpoint_url,
        settings.connect_timeout_s,
        region_name=settings.aws_region,
    )
    return Services(settings, db, store)
