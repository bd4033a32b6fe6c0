"""Sections of RESULTS.md that slower benchmarks write on their own and the accuracy run keeps.

``cost_growth.py`` and ``simulate_throughput.py --results`` take far longer than the accuracy run can
afford to repeat, so each writes its table between ``<!-- section:NAME -->`` markers; ``accuracy.py``
regenerates everything else and re-emits these blocks unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_BLOCK = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.S)
_BEFORE = "## Commands"


def kept_sections(path: Path = RESULTS) -> list[str]:
    """The marked blocks of the current file, in order (none if it does not exist)."""
    return [m.group(0) for m in _BLOCK.finditer(path.read_text())] if path.is_file() else []


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Put ``text`` in block ``name``: in place of the old one, else before the commands (or at the end)."""
    block = f"<!-- section:{name} -->\n{text.strip()}\n<!-- /section:{name} -->\n"
    old = path.read_text() if path.is_file() else ""
    found = next((m for m in _BLOCK.finditer(old) if m.group("name") == name), None)
    if found is not None:
        new = old[: found.start()] + block + old[found.end() :]
    elif _BEFORE in old:
        at = old.index(_BEFORE)
        new = old[:at] + block + "\n" + old[at:]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block
    path.write_text(new)
