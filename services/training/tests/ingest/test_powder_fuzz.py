"""Fuzzing the POWDER RSS reader: random and mutated CSV, coordinates and test-set files never crash with
anything but a clear PowderImportError (one non-empty line); whatever is accepted imports cleanly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heimdall.ingest.powder import PowderImportError, import_powder, read_powder
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.recordings import RecordingWriteError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
CAP = 64 * 1024
COORDS = "{'rx-a': (40.760, -111.840), 'rx-b': (40.770, -111.830), 'bus-1': None}\n"
HEADER = ["timestamp", "bus-1_rss", "bus-1_x", "bus-1_y", "rx-a", "rx-b", "tx_x_coord", "tx_y_coord"]
ROWS = [
    ["2022-01-01 10:00:00", "-80.5", "40.765", "-111.845", "-70", "-101", "40.761", "-111.841"],
    ["2022-01-01 10:00:04", "-101", "-1", "-1", "-71", "-85", "40.762", "-111.842"],
    ["2022-01-01 10:00:08", "-60", "40.766", "-111.846", "-72", "-86", "40.765", "-111.845"],
]
TEST_SET = {"2022-01-01 10:00:04": {"tx_coords": [[40.762, -111.842]], "rx_data": []}}

# Cell values a hand-edited or corrupted CSV might hold.
_cell = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "-101",
            "-1",
            "0.0",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "1_000",
            "0x10",
            "１２",
            "north",
            '"',
            "\n",
        ]
    ),
    st.sampled_from(
        ["2022-01-01 10:00:00", "0001-01-01 00:00:00+14:00", "9999-12-31 23:59:59-14:00", "2022-13-01"]
    ),
    st.floats().map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=12),
)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue().encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("powder-fuzz")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    s = open_services(Settings(data_dir=tmp_path_factory.mktemp("powder-fuzz-db") / "hd"))
    yield s
    s.close()


def _folder(
    scratch: Path, csv_bytes: bytes, coords: bytes = COORDS.encode(), test_set: bytes | None = None
) -> Path:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "single_tx.csv").write_bytes(csv_bytes)
    (folder / "location_coordinates.json").write_bytes(coords)
    if test_set is not None:
        (folder / "random_test.json").write_bytes(test_set)
    return folder / "single_tx.csv"


def _read_or_clear_error(path: Path):
    try:
        return read_powder(path, max_bytes=CAP)
    except PowderImportError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        return None
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


@FUZZ
@given(st.binary(max_size=800))
def test_random_bytes_as_csv(scratch: Path, blob: bytes) -> None:
    _read_or_clear_error(_folder(scratch, blob))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_random_coordinates_file(scratch: Path, blob: bytes) -> None:
    _read_or_clear_error(_folder(scratch, _csv(HEADER, ROWS), coords=blob))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        _json.map(lambda d: json.dumps(d).encode()),
        st.builds(  # the real shape with odd transmitter coordinates
            lambda stamp, tx: json.dumps({stamp: {"tx_coords": tx}}).encode(),
            st.sampled_from([r[0] for r in ROWS]),
            _json,
        ),
    )
)
def test_random_test_set_file(scratch: Path, blob: bytes) -> None:
    _read_or_clear_error(_folder(scratch, _csv(HEADER, ROWS), test_set=blob))


@st.composite
def _mutated_csv(draw) -> bytes:
    header, rows = list(HEADER), [list(r) for r in ROWS]
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(["cell", "cell", "cell", "header", "drop-row", "dup-row", "short-row", "bytes"])
        )
        if op == "cell" and rows:
            r = draw(st.integers(0, len(rows) - 1))
            if rows[r]:
                rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(_cell)
        elif op == "header":
            header[draw(st.integers(0, len(header) - 1))] = draw(_cell | st.sampled_from(HEADER))
        elif op == "drop-row" and rows:
            rows.pop(draw(st.integers(0, len(rows) - 1)))
        elif op == "dup-row" and rows:
            rows.append(list(draw(st.sampled_from(rows))))
        elif op == "short-row" and rows:
            rows[-1] = rows[-1][: draw(st.integers(0, len(rows[-1])))]
    blob = bytearray(_csv(header, rows))
    if draw(st.booleans()) and blob:  # and a few raw byte edits
        for _ in range(draw(st.integers(1, 3))):
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    return bytes(blob)


@FUZZ
@given(_mutated_csv())
def test_mutated_csv_is_read_or_refused_clearly(scratch: Path, blob: bytes) -> None:
    data = _read_or_clear_error(_folder(scratch, blob, test_set=json.dumps(TEST_SET).encode()))
    if data is not None:
        assert data.samples and all(s.readings for s in data.samples)


@FUZZ
@given(_mutated_csv(), st.sampled_from(["powder", "powder-fuzz", "p/" + "x" * 90]))
def test_mutated_csv_imports_or_is_refused_clearly(
    scratch: Path, services, blob: bytes, dataset: str
) -> None:
    """Through the whole import (stations, session rows) into one database."""
    path = _folder(scratch, blob)
    try:
        r = import_powder(
            services.db, services.store, services.settings.raw_iq_bucket, path, dataset=dataset, max_bytes=CAP
        )
    except (PowderImportError, RecordingWriteError) as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
    else:
        assert r.written + r.already_present == r.sessions >= 1
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
