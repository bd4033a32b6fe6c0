"""Every exception class defined in the heimdall package derives from heimdall.errors.HeimdallError.

One base lets each front door (the CLI, a service) map expected failures once; an exception class
outside it would either be shown as a bug or tempt someone into catching ``ValueError`` again.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import heimdall
from heimdall.errors import DataError, HeimdallError, ServiceUnavailableError, UserError

#: not importable on their own: Alembic's env.py runs a migration when imported
SKIPPED_PREFIXES = ("heimdall.storage.migrations",)
#: classes the hierarchy must hold at least (so a broken walk cannot pass with nothing found)
EXPECTED = {
    "heimdall.data.splits.DatasetError": DataError,  # re-exported by heimdall.data.arrays
    "heimdall.evaluate.job.EvaluationError": UserError,
    "heimdall.inference.contract.NotAHeimdallModelError": UserError,
    "heimdall.ingest.powder_read.PowderImportError": DataError,
    "heimdall.jobs.predict.ModelLoadError": UserError,
    "heimdall.tracking.registry.RegistryError": UserError,
    "heimdall.ingest.sigmf_format.InterchangeError": DataError,
    "heimdall.simulate.scenario.ScenarioError": UserError,
    "heimdall.storage.database.DatabaseError": ServiceUnavailableError,
    "heimdall.storage.iq.IQDataError": DataError,
    "heimdall.storage.objectstore.ObjectStoreError": ServiceUnavailableError,
    "heimdall.storage.objectstore.ObjectNotFoundError": DataError,
    "heimdall.storage.objectstore.ObjectStoreURLError": UserError,
    "heimdall.storage.queries.SessionNotFoundError": UserError,
    "heimdall.storage.recordings.RecordingWriteError": DataError,
    "heimdall.storage.stations.StationConflictError": DataError,
    "heimdall.tracking.connection.TrackingError": ServiceUnavailableError,
    "heimdall.tracking.replay.RunNotFoundError": UserError,
    "heimdall.training.config.ConfigError": UserError,
}
#: built-in bases kept so existing ``except ValueError`` / ``except RuntimeError`` code still works
BUILTIN_BASES = {
    "heimdall.storage.queries.SessionNotFoundError": LookupError,
    "heimdall.storage.recordings.RecordingWriteError": RuntimeError,
    "heimdall.storage.objectstore.ObjectNotFoundError": RuntimeError,
}


def _modules() -> list[ModuleType]:
    found = []
    for info in pkgutil.walk_packages(heimdall.__path__, prefix="heimdall."):
        if info.name.startswith(SKIPPED_PREFIXES):
            continue
        found.append(importlib.import_module(info.name))
    return found


def _exception_classes() -> dict[str, type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules():
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def test_every_exception_class_is_a_heimdall_error() -> None:
    classes = _exception_classes()
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, HeimdallError))
    assert not outside, f"exception classes outside heimdall.errors.HeimdallError: {outside}"
    missing = sorted(set(EXPECTED) - set(classes))
    assert not missing, f"expected exception classes not found (moved? renamed?): {missing}"


def test_each_class_has_its_kind_and_keeps_its_builtin_base() -> None:
    classes = _exception_classes()
    for name, kind in EXPECTED.items():
        assert issubclass(classes[name], kind), f"{name} is not a {kind.__name__}"
    for name, base in BUILTIN_BASES.items():
        assert issubclass(classes[name], base), f"{name} lost its built-in base {base.__name__}"
    for cls in (UserError, DataError):
        assert issubclass(cls, ValueError) and cls.exit_code == 2
    assert issubclass(ServiceUnavailableError, RuntimeError)


def test_kinds_are_distinct() -> None:
    assert not issubclass(UserError, DataError) and not issubclass(DataError, UserError)
    assert not issubclass(ServiceUnavailableError, UserError | DataError)
