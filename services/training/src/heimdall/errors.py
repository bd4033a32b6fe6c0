"""The one error hierarchy of Heimdall: what a front door shows as a one-line message.

Every exception the package raises on purpose for something outside the code (a user's flag, file or
reference; stored or imported data; a server) derives from :class:`HeimdallError`. Its message is one
line a user can act on, naming the flag, path, session or URL (passwords masked). Each front door (the
``heimdall`` CLI, a service endpoint) maps ``HeimdallError`` once; any other exception is a bug and
keeps its traceback.

* :class:`UserError` (exit 2): a bad flag, file, configuration or reference (an unknown id);
* :class:`DataError` (exit 2): stored or imported data that is wrong (corrupt IQ, a bad session, an
  empty approved set);
* :class:`ServiceUnavailableError` (exit 2, see below): the database, object store, MLflow or the
  broker is unreachable or failing;
* any other exception (exit 1, with its traceback): a bug.

``exit_code`` is a class attribute so a front door needs no table of its own. Service failures exit 2
like the others for now: ``TrackingError`` (a ``ServiceUnavailableError``) still also carries user
mistakes (an unknown ``--from-run`` id or model alias), and a separate code (3, "retry later") would
mislabel those. Once those raises are ``UserError``, set ``ServiceUnavailableError.exit_code = 3``.

The second bases (``ValueError``, ``RuntimeError``) are kept so code that catches the built-in types
keeps working.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "HeimdallError",
    "PathNotFoundError",
    "ServiceUnavailableError",
    "UserError",
]


class HeimdallError(Exception):
    """An expected failure: the message is one line a user can act on (it names what was wrong)."""

    #: the exit status of the ``heimdall`` CLI for this kind of failure
    exit_code: int = 2


class UserError(HeimdallError, ValueError):
    """A bad flag, file, configuration or reference (an unknown session id, model or version)."""


class PathNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (still a ``FileNotFoundError``)."""


class DataError(HeimdallError, ValueError):
    """Stored or imported data that is wrong: corrupt IQ, a bad session, an empty approved set."""


class ServiceUnavailableError(HeimdallError, RuntimeError):
    """The database, object store, MLflow or the broker is unreachable or failing (URL without password)."""


def yaml_problem(exc: Exception) -> str:
    """One line from a PyYAML error: what the parser tripped on, and where (line, column)."""
    problem_mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if what is not None or problem_mark is not None:
        where = f" at line {problem_mark.line + 1}, column {problem_mark.column + 1}" if problem_mark else ""
        return f"{what or 'syntax error'}{where}"
    return " ".join(str(exc).split())


def validation_problem(err: Exception) -> str:
    """One line from a pydantic ``ValidationError``: ``field.path: message`` for each problem."""
    parts = []
    for e in err.errors():  # type: ignore[attr-defined]
        field = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts)
