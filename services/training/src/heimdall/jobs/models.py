"""The model registry (``heimdall models list|promote``): registered versions and the champion alias."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from heimdall.settings import Settings


class VersionRecord(BaseModel):
    """One registered version of heimdall-localizer."""

    version: str
    run_id: str | None = None
    aliases: list[str] = []
    test_rmse_m: float | None = None
    test_median_error_m: float | None = None
    test_ids_sha256_16: str | None = None
    n_test: int | None = None
    created: int | None = None  # ms since the epoch
    source: str | None = None

    @classmethod
    def of(cls, info: Any) -> VersionRecord:
        """From a :class:`heimdall.tracking.registry.VersionInfo`."""
        return cls(
            version=info.version,
            run_id=info.run_id,
            aliases=list(info.aliases),
            test_rmse_m=info.test_rmse_m,
            test_median_error_m=info.test_median_error_m,
            test_ids_sha256_16=info.test_ids_sha256_16,
            n_test=info.n_test,
            created=info.created,
            source=info.source,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON ``heimdall models list --json`` prints for this version."""
        return {
            "version": self.version,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "test_rmse_m": self.test_rmse_m,
            "test_median_error_m": self.test_median_error_m,
            "test_ids_sha256_16": self.test_ids_sha256_16,
            "n_test": self.n_test,
            "created_ms": self.created,
            "source": self.source,
        }


class ChampionOutcome(BaseModel):
    """What happened to the champion alias and why."""

    version: str
    moved: bool
    previous: str | None
    reason: str

    @classmethod
    def of(cls, decision: Any) -> ChampionOutcome:
        """From a :class:`heimdall.tracking.registry.ChampionDecision`."""
        return cls(
            version=decision.version, moved=decision.moved, previous=decision.previous, reason=decision.reason
        )


class ModelList(BaseModel):
    """The registered versions, newest first, and where the registry is."""

    model_name: str
    registry: str  # the tracking store, password masked
    versions: list[VersionRecord]


class PromoteRequest(BaseModel):
    version: str


class PromoteOutcome(BaseModel):
    model_name: str
    alias: str
    decision: ChampionOutcome


def list_models(settings: Settings) -> ModelList:
    """Every registered version of heimdall-localizer (fail-fast preflight of the tracking store first)."""
    from heimdall.tracking.connection import connect
    from heimdall.tracking.registry import MODEL_NAME, list_versions

    target, client = connect(settings)
    versions = list_versions(client)
    return ModelList(
        model_name=MODEL_NAME, registry=target.display, versions=[VersionRecord.of(v) for v in versions]
    )


def promote(request: PromoteRequest, settings: Settings) -> PromoteOutcome:
    """Point the champion alias at ``request.version`` (RegistryError, alias unchanged, if unknown)."""
    from heimdall.tracking.connection import connect
    from heimdall.tracking.registry import CHAMPION, MODEL_NAME
    from heimdall.tracking.registry import promote as move_alias

    _, client = connect(settings)
    decision = move_alias(client, request.version)
    return PromoteOutcome(model_name=MODEL_NAME, alias=CHAMPION, decision=ChampionOutcome.of(decision))
