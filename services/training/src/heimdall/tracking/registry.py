"""The model registry: every tracked run registers ``heimdall-localizer``; the ``champion`` alias serves.

The alias moves to a new version only when that version beats the current champion on the **same**
test split (same hash of test-session ids: the RMSE of two different test sets says nothing about
which model is better), or when the user asks for it (``--promote`` / ``heimdall models promote``).
Aliases, not the deprecated stages. Every call goes through the caller's ``MlflowClient`` (its registry
URI), so mlflow is never imported here and no process-wide MLflow state is used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from heimdall.errors import UserError
from heimdall.settings import redact_text
from heimdall.tracking.connection import TrackingError

log = logging.getLogger("heimdall.registry")

MODEL_NAME = "heimdall-localizer"
CHAMPION = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"

# Version tags written at registration, so `models list` and the champion rule need no run lookups.
TAG_MODEL_ID = "heimdall.model_id"
TAG_TEST_IDS = "heimdall.test_ids_sha256_16"
TAG_TEST_RMSE = "heimdall.test_rmse_m"
TAG_TEST_MEDIAN = "heimdall.test_median_error_m"
TAG_N_TEST = "heimdall.n_test"
TAG_LOGGED_MODEL = "heimdall.logged_model_uri"

# Registries MLflow runs in-process on a database (as opposed to a tracking server over HTTP).
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class RegistryError(UserError):
    """A registry request cannot be honoured (unknown version, no registered model…)."""


@dataclass
class VersionInfo:
    """One registered version as ``models list`` shows it."""

    version: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    test_rmse_m: float | None = None
    test_median_error_m: float | None = None
    test_ids_sha256_16: str | None = None
    n_test: int | None = None
    created: int | None = None  # ms since the epoch
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
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


@dataclass(frozen=True)
class ChampionDecision:
    """What happened to the alias and why (printed by `heimdall train`, tagged on the run)."""

    version: str
    moved: bool
    previous: str | None
    reason: str


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    f = _float(value)
    return int(f) if f is not None else None


def _registry_error(what: str, exc: Exception) -> TrackingError:
    """A failing registry call as a TrackingError: one line, credentials masked, the cause named."""
    reason = " ".join(redact_text(f"{type(exc).__name__}: {exc}").split())
    return TrackingError(f"MLflow model registry: cannot {what}: {reason[:300]}")


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return (
        code == "RESOURCE_DOES_NOT_EXIST" or "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc)
    )


def version_info(client: Any, mv: Any) -> VersionInfo:
    """A model version's test figures from its tags, falling back to its run's params and metrics."""
    tags = dict(getattr(mv, "tags", None) or {})
    info = VersionInfo(
        version=str(mv.version),
        run_id=mv.run_id or tags.get(TAG_MODEL_ID),
        aliases=sorted(getattr(mv, "aliases", None) or []),
        test_rmse_m=_float(tags.get(TAG_TEST_RMSE)),
        test_median_error_m=_float(tags.get(TAG_TEST_MEDIAN)),
        test_ids_sha256_16=tags.get(TAG_TEST_IDS),
        n_test=_int(tags.get(TAG_N_TEST)),
        created=getattr(mv, "creation_timestamp", None),
        source=getattr(mv, "source", None),
    )
    if info.run_id and (info.test_rmse_m is None or info.test_ids_sha256_16 is None):
        try:
            run = client.get_run(info.run_id)
        except Exception:  # the run may have been deleted; the version still lists
            return info
        metrics, params = run.data.metrics, run.data.params
        info.test_rmse_m = (
            info.test_rmse_m if info.test_rmse_m is not None else _float(metrics.get("test_rmse_m"))
        )
        if info.test_median_error_m is None:
            info.test_median_error_m = _float(metrics.get("test_median_error_m"))
        info.test_ids_sha256_16 = info.test_ids_sha256_16 or params.get("data.test.ids_sha256_16")
        info.n_test = info.n_test if info.n_test is not None else _int(params.get("data.test.n"))
    return info


def _version_source(client: Any, model_uri: str) -> str:
    """The ``source`` to register for ``model_uri`` through ``client``.

    MLflow's in-process SQL registry resolves a ``models:/m-…`` source through its process-wide
    default client (an MLflow TODO: "rather than relying on global URI"), i.e. not through ``client``,
    so there the logged model's artifact location (what MLflow would resolve it to) is registered
    instead; a tracking server resolves ``models:/m-…`` itself and gets it unchanged.
    """
    if not model_uri.startswith("models:/m-"):
        return model_uri
    scheme = urlsplit(str(client.tracking_uri)).scheme.lower()
    if not scheme.startswith(_SQL_SCHEMES):
        return model_uri
    return str(client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location)


def register(client: Any, model_uri: str, run_id: str, report: Mapping[str, Any] | Any) -> VersionInfo:
    """Register ``model_uri`` (the run's logged ONNX model) as a new version with its test figures.

    ``report`` is the run's report.json content (a mapping) or its TrainReport.
    """
    if not isinstance(report, Mapping):
        report = report.as_json()
    test = report.get("test", {})
    snap = report.get("data_snapshot", {}).get("test", {})
    tags = {
        TAG_MODEL_ID: run_id,
        TAG_TEST_IDS: str(snap.get("ids_sha256_16", "")),
        TAG_N_TEST: str(snap.get("n", "")),
        TAG_TEST_RMSE: repr(float(test.get("rmse_m", math.nan))),
        TAG_TEST_MEDIAN: repr(float(test.get("median_error_m", math.nan))),
        TAG_LOGGED_MODEL: model_uri,
    }
    try:
        client.get_registered_model(MODEL_NAME)
    except Exception as exc:
        if not _is_missing(exc):
            raise _registry_error(f"look up {MODEL_NAME}", exc) from None
        client.create_registered_model(
            MODEL_NAME, description="Heimdall RF transmitter localiser (ONNX; see docs/INFERENCE_HANDOFF.md)"
        )
    logged_model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        MODEL_NAME,
        source=_version_source(client, model_uri),
        run_id=run_id,
        tags=tags,
        model_id=logged_model_id,
    )
    return version_info(client, client.get_model_version(MODEL_NAME, mv.version))


def champion(client: Any) -> VersionInfo | None:
    """The version the ``champion`` alias points at, or None."""
    try:
        mv = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except Exception as exc:
        if _is_missing(exc) or "alias" in str(exc).lower():
            return None
        raise _registry_error(f"read the {CHAMPION} alias", exc) from None
    return version_info(client, mv)


def decide(new: VersionInfo, current: VersionInfo | None, promote: bool = False) -> tuple[bool, str]:
    """Whether ``champion`` should move from ``current`` to ``new``, and why (pure; see module doc)."""
    if current is None:
        return True, f"version {new.version} is the first champion"
    if current.version == new.version:
        return False, f"version {new.version} already is the champion"
    if promote:
        return True, f"promoted on request over version {current.version}"
    if not new.test_ids_sha256_16 or new.test_ids_sha256_16 != current.test_ids_sha256_16:
        return False, (
            f"champion version {current.version} was tested on a different test split "
            f"(test ids {current.test_ids_sha256_16 or 'unknown'}, "
            f"this run {new.test_ids_sha256_16 or 'unknown'}): "
            "RMSEs are not comparable; use --promote or `heimdall models promote` to move it anyway"
        )
    if new.test_rmse_m is None or current.test_rmse_m is None:
        return False, f"test RMSE missing for version {new.version} or champion {current.version}"
    if new.test_rmse_m < current.test_rmse_m:
        return True, (
            f"test RMSE {new.test_rmse_m:.1f} m beats champion version {current.version} "
            f"({current.test_rmse_m:.1f} m) on the same test split"
        )
    return False, (
        f"test RMSE {new.test_rmse_m:.1f} m does not beat champion version {current.version} "
        f"({current.test_rmse_m:.1f} m) on the same test split"
    )


def update_champion(client: Any, new: VersionInfo, promote: bool = False) -> ChampionDecision:
    """Apply :func:`decide` to the registry."""
    current = champion(client)
    move, reason = decide(new, current, promote)
    if move:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, new.version)
    previous = current.version if current is not None else None
    log.info("champion %s: %s", "moved" if move else "kept", reason)
    return ChampionDecision(new.version, move, previous, reason)


def list_versions(client: Any) -> list[VersionInfo]:
    """Every version of ``heimdall-localizer``, newest first (empty if nothing is registered)."""
    try:
        versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    except Exception as exc:
        if _is_missing(exc):
            return []
        raise _registry_error(f"list the versions of {MODEL_NAME}", exc) from None
    aliases: dict[str, list[str]] = {}
    try:
        rm = client.get_registered_model(MODEL_NAME)
        for alias, ver in (getattr(rm, "aliases", None) or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
    except Exception as exc:
        if not _is_missing(exc):
            raise _registry_error(f"read the aliases of {MODEL_NAME}", exc) from None
    out = []
    for mv in versions:
        info = version_info(client, mv)
        info.aliases = sorted(set(info.aliases) | set(aliases.get(info.version, [])))
        out.append(info)
    return sorted(out, key=lambda v: int(v.version) if v.version.isdigit() else 0, reverse=True)


def promote(client: Any, version: str) -> ChampionDecision:
    """Point ``champion`` at ``version``; RegistryError (alias untouched) if it does not exist."""
    version = str(version).strip()
    known = [v.version for v in list_versions(client)]
    if not known:
        raise RegistryError(f"no versions of {MODEL_NAME} are registered; train a model first")
    if version not in known:
        raise RegistryError(
            f"{MODEL_NAME} has no version {version!r}; "
            f"registered versions: {', '.join(sorted(known, key=int))}"
        )
    current = champion(client)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    previous = current.version if current is not None else None
    if previous == version:
        return ChampionDecision(version, False, previous, f"version {version} already is the champion")
    return ChampionDecision(
        version, True, previous, f"promoted on request (was version {previous or 'none'})"
    )
