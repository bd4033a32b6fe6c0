"""The database schema (``heimdall db upgrade``): migrations applied, receiver network seeded."""

from __future__ import annotations

from pydantic import BaseModel

from heimdall.settings import Settings
from heimdall.storage.database import open_database


class UpgradeOutcome(BaseModel):
    database: str  # URL, password masked


def upgrade(settings: Settings) -> UpgradeOutcome:
    """Apply the schema migrations and seed the receiver network (opening the database does both)."""
    db = open_database(settings.resolved_database_url, settings.connect_timeout_s)
    try:
        return UpgradeOutcome(database=db.safe_url)
    finally:
        db.dispose()
