"""The receiver network a model is trained for: station order, positions and the metric frame."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.geo import LocalFrame
from heimdall.storage.queries import StoredSession


@dataclass(frozen=True)
class ReceiverNetwork:
    """Receivers in model order (by station id) and the ENU frame centred on their centroid.

    It travels with every model: token k of the network is always station `station_ids[k]`, and
    positions are metres east/north of `frame`'s origin.
    """

    station_ids: tuple[int, ...]
    names: tuple[str, ...]
    latitudes: tuple[float, ...]
    longitudes: tuple[float, ...]

    @property
    def frame(self) -> LocalFrame:
        return LocalFrame.centred_on(self.latitudes, self.longitudes)

    @property
    def size(self) -> int:
        return len(self.station_ids)

    def positions_enu_m(self) -> np.ndarray:
        return self.frame.to_enu(self.latitudes, self.longitudes)

    def index(self) -> dict[int, int]:
        return {sid: k for k, sid in enumerate(self.station_ids)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "station_ids": list(self.station_ids),
            "names": list(self.names),
            "latitudes": list(self.latitudes),
            "longitudes": list(self.longitudes),
            "frame_origin": [self.frame.origin_lat, self.frame.origin_lon],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReceiverNetwork:
        return cls(
            tuple(int(i) for i in d["station_ids"]),
            tuple(str(n) for n in d["names"]),
            tuple(float(x) for x in d["latitudes"]),
            tuple(float(x) for x in d["longitudes"]),
        )

    @classmethod
    def from_sessions(cls, sessions: Iterable[StoredSession]) -> ReceiverNetwork:
        """Every station that measured in the sessions; a moving receiver sits at its mean position."""
        seen: dict[int, tuple[str, list[float], list[float]]] = {}
        for s in sessions:
            for m in s.measurements:
                _, lats, lons = seen.setdefault(m.station_id, (m.station_name, [], []))
                lats.append(m.receiver_latitude)
                lons.append(m.receiver_longitude)
        ids = tuple(sorted(seen))
        return cls(
            ids,
            tuple(seen[i][0] for i in ids),
            tuple(float(np.mean(seen[i][1])) for i in ids),
            tuple(float(np.mean(seen[i][2])) for i in ids),
        )
