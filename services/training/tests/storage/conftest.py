"""Storage fixtures: each test runs against a local folder and against the moto S3 endpoint."""

from __future__ import annotations

import pytest

from heimdall.storage.objectstore import FileObjectStore, ObjectStore, S3ObjectStore


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    if request.param == "file":
        return FileObjectStore(tmp_path / "objects")
    endpoint = request.getfixturevalue("s3_env")
    return S3ObjectStore(endpoint_url=endpoint, connect_timeout_s=2)
