"""Fixed transmitter sites (``heimdall simulate --sites FILE``): parse and check a user's site list.

Real labelled data comes from a handful of fixed transmitters (beacons, repeaters), not from a uniform
draw over the area; a sites file lets the simulator produce that regime. The file is CSV with the
header ``latitude,longitude[,power_w][,name]`` or YAML: a list of mappings with those keys, or
``{sites: [...]}``. Everything here is pure parsing; the simulator places the sites in the world
(:mod:`heimdall.simulate.session`). Every problem is a :class:`SitesError` naming the file, the row
(CSV line or YAML entry) and the field.

A file's identity (:attr:`Sites.sha256`) is its content (positions, powers, names, order), not its
format or layout: the same sites as CSV or YAML simulate the same sessions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from heimdall.errors import UserError, yaml_problem

#: At most this many sites per file, and this many bytes of file: a typo cannot ask for gigabytes.
MAX_SITES = 100_000
MAX_SITES_FILE_BYTES = 16 * 2**20
REQUIRED = ("latitude", "longitude")
OPTIONAL = ("power_w", "name")
_FORMAT = "latitude,longitude[,power_w][,name]"


class SitesError(UserError):
    """A sites file could not be read or is invalid; the message names the file, row and field."""


@dataclass(frozen=True)
class Site:
    """One fixed transmitter: its position, optional fixed power (W) and a name for messages."""

    latitude: float
    longitude: float
    power_w: float | None  # None: the scenario's power draw
    name: str
    where: str  # "line 3" (CSV) or "entry 3" (YAML): where the file defines it

    @property
    def power_dbm(self) -> float | None:
        return None if self.power_w is None else 10.0 * math.log10(self.power_w * 1000.0)


@dataclass(frozen=True)
class Sites:
    """The parsed sites of one file, in file order (a session's site is an index into `sites`)."""

    source: str  # the file, for messages
    sites: tuple[Site, ...]

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of every site (format, layout and file name do not enter)."""
        rows = [[s.latitude, s.longitude, s.power_w, s.name] for s in self.sites]
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode("utf-8")).hexdigest()

    def describe(self, index: int) -> str:
        """``FILE: site 'NAME' (line 3, 45.10000, 7.20000)``: how a message names site `index`."""
        s = self.sites[index]
        return f"{self.source}: site {s.name!r} ({s.where}, {s.latitude:.5f}, {s.longitude:.5f})"


def _number(value: Any, field: str, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SitesError(f"{source}: {where}: {field} must be a number, got {type(value).__name__}")
    text = value.strip() if isinstance(value, str) else value
    if text == "":
        raise SitesError(f"{source}: {where}: {field} is empty")
    try:
        x = float(text)
    except ValueError:
        raise SitesError(f"{source}: {where}: {field} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise SitesError(f"{source}: {where}: {field} must be finite, got {value!r}")
    return x


def _site(values: dict[str, Any], ordinal: int, where: str, source: str) -> Site:
    """One site from its raw field values (strings from CSV, YAML scalars), checked field by field."""
    lat = _number(values["latitude"], "latitude", where, source)
    lon = _number(values["longitude"], "longitude", where, source)
    if not -90.0 <= lat <= 90.0:
        raise SitesError(f"{source}: {where}: latitude {lat:g} is outside -90..90")
    if not -180.0 <= lon <= 180.0:
        raise SitesError(f"{source}: {where}: longitude {lon:g} is outside -180..180")
    power: float | None = None
    raw_power = values.get("power_w")
    if raw_power is not None and not (isinstance(raw_power, str) and not raw_power.strip()):
        power = _number(raw_power, "power_w", where, source)
        if power <= 0.0:
            raise SitesError(f"{source}: {where}: power_w must be > 0 W, got {power:g}")
    name = values.get("name")
    if name is not None and (isinstance(name, bool) or not isinstance(name, str | int)):
        raise SitesError(f"{source}: {where}: name must be text, got {type(name).__name__}")
    label = str(name).strip() if name is not None else ""
    return Site(lat, lon, power, label or f"site {ordinal}", where)


def _checked(sites: list[Site], source: str) -> Sites:
    if not sites:
        raise SitesError(f"{source}: no sites (the list is empty); give at least one {_FORMAT}")
    if len(sites) > MAX_SITES:
        raise SitesError(f"{source}: {len(sites):,} sites; at most {MAX_SITES:,} are allowed")
    first: dict[str, str] = {}
    for s in sites:
        if s.name in first:
            raise SitesError(f"{source}: {s.where}: name {s.name!r} is already used ({first[s.name]})")
        first[s.name] = s.where
    return Sites(source, tuple(sites))


def parse_sites_csv(text: str, source: str) -> Sites:
    """Sites from CSV text with the header ``latitude,longitude[,power_w][,name]`` (blank lines skipped)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    header: list[str] | None = None
    sites: list[Site] = []
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _header(row, where, source)
                continue
            if len(row) != len(header):
                raise SitesError(
                    f"{source}: {where}: {len(row)} values for the {len(header)} columns {','.join(header)}"
                )
            sites.append(_site(dict(zip(header, row, strict=True)), len(sites) + 1, where, source))
    except csv.Error as exc:
        raise SitesError(f"{source}: line {reader.line_num}: malformed CSV: {exc}") from None
    if header is None:
        raise SitesError(f"{source}: the file is empty; the first line must be the header {_FORMAT}")
    return _checked(sites, source)


def _header(row: list[str], where: str, source: str) -> list[str]:
    names = [cell.strip().lower() for cell in row]
    for i, name in enumerate(names):
        if not name:
            raise SitesError(f"{source}: {where}: header column {i + 1} is empty; the header is {_FORMAT}")
        if name not in REQUIRED + OPTIONAL:
            raise SitesError(
                f"{source}: {where}: unknown header column {row[i].strip()!r}; the first line must be "
                f"the header {_FORMAT}"
            )
        if name in names[:i]:
            raise SitesError(f"{source}: {where}: header column {name!r} appears twice")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise SitesError(f"{source}: {where}: the header lacks {' and '.join(missing)}; it is {_FORMAT}")
    return names


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float):
                continue  # PyYAML refuses unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_sites_yaml(text: str, source: str) -> Sites:
    """Sites from YAML: a list of mappings (keys latitude, longitude, power_w, name) or ``{sites: [...]}``."""
    try:
        data: Any = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SitesError(f"{source}: malformed YAML: {yaml_problem(exc)}") from None
    if isinstance(data, dict):
        if set(data) != {"sites"}:
            keys = ", ".join(sorted(map(str, data))) or "none"
            raise SitesError(f"{source}: a mapping must have the one key 'sites' (a list), got keys {keys}")
        data = data["sites"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise SitesError(f"{source}: sites must be a YAML list of mappings, got {type(data).__name__}")
    sites = []
    for i, entry in enumerate(data, start=1):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise SitesError(
                f"{source}: {where}: a site must be a mapping of {_FORMAT}, got {type(entry).__name__}"
            )
        unknown = sorted(str(k) for k in entry if k not in REQUIRED + OPTIONAL)
        if unknown:
            raise SitesError(f"{source}: {where}: unknown key {unknown[0]!r}; the keys are {_FORMAT}")
        missing = [k for k in REQUIRED if entry.get(k) is None]
        if missing:
            raise SitesError(f"{source}: {where}: {' and '.join(missing)} missing")
        sites.append(_site(entry, i, where, source))
    return _checked(sites, source)


def load_sites(path: str | Path) -> Sites:
    """Parse a sites file: CSV (``.csv``) or YAML (``.yaml``/``.yml``), chosen by its extension."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise SitesError(f"{p}: a sites file must end in .csv, .yaml or .yml")
    if not p.is_file():
        raise SitesError(f"{p}: sites file not found")
    size = p.stat().st_size
    if size > MAX_SITES_FILE_BYTES:
        raise SitesError(f"{p}: {size:,} bytes; a sites file may hold at most {MAX_SITES_FILE_BYTES:,}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SitesError(f"{p}: cannot read the sites file: {exc}") from None
    return parse_sites_csv(text, str(p)) if suffix == ".csv" else parse_sites_yaml(text, str(p))
