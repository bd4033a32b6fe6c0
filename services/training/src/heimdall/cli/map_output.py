"""``--format json|geojson|html`` and ``--output FILE`` for ``heimdall predict`` and ``heimdall locate``.

Without ``--output`` JSON and GeoJSON go to standard output (for pipes); an HTML map is a file by
nature, so it is written to ``heimdall-map-<label>.html`` in the current folder, and the path is said.
Every file is written atomically; a path that cannot be written is refused before the model runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from heimdall.errors import UserError

if TYPE_CHECKING:
    from heimdall.inference.maps import MapEstimate
    from heimdall.jobs.locate import LocateOutcome

__all__ = ["FORMATS", "check_format", "default_map_name", "emit", "locate_estimates", "render_estimates"]

FORMATS = ("json", "geojson", "html")
FORMAT_HELP = (
    "json, geojson (RFC 7946 FeatureCollection) or html (a self-contained Leaflet map; without --output "
    "it is written to heimdall-map-<label>.html)."
)
OUTPUT_HELP = "Write to FILE (atomically) instead of standard output."


def check_format(fmt: str, output: Path | None) -> Path | None:
    """Refuse an unknown format or an unwritable --output before anything runs."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if output is None:
        return None
    from heimdall.inference.maps import check_output_file

    return check_output_file(output)


def default_map_name(labels: Sequence[str]) -> Path:
    """``heimdall-map-<label>.html`` (the label made file-name safe), or ``…-<n>-captures.html``."""
    stem = labels[0] if len(labels) == 1 else f"{len(labels)}-captures"
    return Path(f"heimdall-map-{re.sub(r'[^A-Za-z0-9._-]+', '-', stem).strip('-') or 'estimate'}.html")


def emit(text: str, fmt: str, output: Path | None, labels: Sequence[str]) -> None:
    """Print ``text`` (json/geojson without --output) or write it to a file and say where."""
    if output is None and fmt != "html":
        typer.echo(text, nl=not text.endswith("\n"))
        return
    from heimdall.inference.maps import write_output

    path = write_output(output if output is not None else default_map_name(labels), text)
    typer.echo(f"wrote {fmt} to {path}", err=True)


def render_estimates(estimates: Sequence[MapEstimate], fmt: str, title: str) -> str:
    import json

    from heimdall.inference.maps import location_geojson
    from heimdall.inference.maps_html import render_html

    if fmt == "geojson":
        return json.dumps(location_geojson(estimates), indent=2) + "\n"
    return render_html(estimates, title)


def locate_estimates(outcome: LocateOutcome) -> list[MapEstimate]:
    """``heimdall locate``'s outcome as map inputs: every check (used, set aside by the model, refused with
    its reason, excluded) and the model's receivers that had no recording in the capture (absent)."""
    from dataclasses import replace

    from heimdall.inference.formats import map_estimate
    from heimdall.inference.maps import MapReceiver

    out = []
    for est in outcome.estimates:
        receivers: list[MapReceiver] = []
        for r in est.receivers:
            if r.station_id is None:
                continue  # a recording no receiver of the model matches: it has no place on the map
            status = r.status if r.status in ("used", "set_aside", "refused", "excluded") else "refused"
            note = "; ".join([*([r.reason] if r.reason else []), *r.notes]) or None
            receivers.append(
                MapReceiver(
                    station_id=r.station_id,
                    name=r.name or str(r.station_id),
                    latitude=r.latitude,
                    longitude=r.longitude,
                    status=status,
                    heard=r.heard,
                    snr_db=r.snr_db,
                    power_dbm=r.power_dbm,
                    note=note,
                )
            )
        seen = {r.station_id for r in receivers}
        receivers += [
            MapReceiver(n.station_id, n.name or str(n.station_id), n.latitude, n.longitude, "absent")
            for n in outcome.network
            if n.station_id not in seen
        ]
        base = map_estimate(est.prediction)
        out.append(replace(base, label=est.label, receivers=tuple(receivers)))
    return out
