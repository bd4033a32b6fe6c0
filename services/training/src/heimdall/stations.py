"""The receiver network: the WebSDR stations the acquisition service records from."""

from __future__ import annotations

from dataclasses import dataclass

#: The columns of a stations file (``heimdall stations add``), in their documented order.
STATION_FILE_COLUMNS = (
    "id",
    "name",
    "latitude",
    "longitude",
    "altitude_asl",
    "url",
    "frequency_min_hz",
    "frequency_max_hz",
)


@dataclass(frozen=True)
class Station:
    """One fixed receiver, as in the acquisition service's `websdr_stations` table."""

    id: int
    name: str
    latitude: float
    longitude: float
    altitude_asl: float
    url: str
    frequency_min_hz: float = 144_000_000.0
    frequency_max_hz: float = 440_000_000.0
    is_active: bool = True


def _websdr(i: int, name: str, lat: float, lon: float, alt: float, host: str) -> Station:
    return Station(i, name, lat, lon, alt, f"http://{host}/")


# The north-west Italy network (docs/TRAINING.md §2). Ids are fixed: measurement rows reference them.
NW_ITALY_STATIONS: tuple[Station, ...] = (
    _websdr(1, "Aquila di Giaveno", 45.02, 7.29, 600.0, "websdr.aquila-giaveno.example"),
    _websdr(2, "Montanaro", 45.234, 7.857, 300.0, "websdr.montanaro.example"),
    _websdr(3, "Torino", 45.044, 7.672, 250.0, "websdr.torino.example"),
    _websdr(4, "Coazze", 45.048, 7.238, 700.0, "websdr.coazze.example"),
    _websdr(5, "Passo del Giovi", 44.561, 8.956, 480.0, "websdr.passo-giovi.example"),
    _websdr(6, "Genova", 44.395, 8.956, 100.0, "websdr.genova.example"),
    _websdr(7, "Milano - Baggio", 45.478, 9.123, 120.0, "websdr.milano-baggio.example"),
)
