"""SigMF interchange: recordings from outside come in as SigMF, sessions go out as SigMF.

The public API in one place; the work is split by job: the vocabulary (``heimdall`` extension keys,
limits, records) in :mod:`~heimdall.ingest.sigmf_format`, reading and checking files in
:mod:`~heimdall.ingest.sigmf_read`, writing them in :mod:`~heimdall.ingest.sigmf_export`, storing
them as sessions in :mod:`~heimdall.ingest.sigmf_store`.
"""

from __future__ import annotations

from heimdall.ingest.sigmf_export import export_session_sigmf
from heimdall.ingest.sigmf_format import (
    DATASET,
    DEFAULT_DATASET,
    EXPORT_DATATYPE,
    EXTENSION,
    FREQUENCY_OFFSET_HZ,
    MEASUREMENT_ID,
    META_EXT,
    NOTES,
    SESSION_DURATION_S,
    SESSION_ID,
    SESSION_START,
    SIGNAL_STRENGTH_DB,
    SNR_DB,
    STATION_ID,
    STATION_MATCH_M,
    STATION_NAME,
    SUPPORTED_DATATYPES,
    TASK_ID,
    TRUTH,
    ImportResult,
    InterchangeError,
    Recording,
    Truth,
)
from heimdall.ingest.sigmf_read import find_recordings, read_recording
from heimdall.ingest.sigmf_store import import_sigmf

__all__ = [
    "DATASET",
    "DEFAULT_DATASET",
    "EXPORT_DATATYPE",
    "EXTENSION",
    "FREQUENCY_OFFSET_HZ",
    "MEASUREMENT_ID",
    "META_EXT",
    "NOTES",
    "SESSION_DURATION_S",
    "SESSION_ID",
    "SESSION_START",
    "SIGNAL_STRENGTH_DB",
    "SNR_DB",
    "STATION_ID",
    "STATION_MATCH_M",
    "STATION_NAME",
    "SUPPORTED_DATATYPES",
    "TASK_ID",
    "TRUTH",
    "ImportResult",
    "InterchangeError",
    "Recording",
    "Truth",
    "export_session_sigmf",
    "find_recordings",
    "import_sigmf",
    "read_recording",
]
