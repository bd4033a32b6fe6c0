"""Nothing below the CLI reads (or writes) the process environment except Settings.

The one documented exception is heimdall.tracking.connection.configure_mlflow_process: MLflow and
botocore take some client options from environment variables only (see that module's docstring).
"""

from __future__ import annotations

import re
from pathlib import Path

import heimdall

PACKAGE = Path(heimdall.__file__).resolve().parent
ALLOWED = {"settings.py", "tracking/connection.py"}
ENVIRONMENT = re.compile(
    r"\bos\s*\.\s*(environ|getenv|putenv|unsetenv)\b|\bfrom\s+os\s+import\b[^\n]*\b(environ|getenv)\b"
)


def test_only_settings_and_the_mlflow_process_options_touch_the_environment() -> None:
    offenders = {
        str(f.relative_to(PACKAGE)): sorted({m.group(0) for m in ENVIRONMENT.finditer(f.read_text())})
        for f in sorted(PACKAGE.rglob("*.py"))
        if f.relative_to(PACKAGE).as_posix() not in ALLOWED
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_exception_is_confined_to_configure_mlflow_process() -> None:
    """In connection.py, os.environ appears only inside configure_mlflow_process."""
    import ast

    source = (PACKAGE / "tracking" / "connection.py").read_text()
    tree = ast.parse(source)
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "configure_mlflow_process":
            inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    uses = {
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in ("environ", "getenv", "putenv", "unsetenv")
    }
    assert uses and uses <= inside, sorted(uses - inside)


def test_the_old_module_paths_are_gone() -> None:
    assert not (PACKAGE / "tracking.py").exists() and not (PACKAGE / "registry.py").exists()
    assert (PACKAGE / "tracking" / "__init__.py").is_file()
