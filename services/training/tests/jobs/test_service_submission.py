"""What a service job may ask for: the `heimdall train` options, checked like the CLI's, minus DDP."""

from __future__ import annotations

import pytest

from heimdall.jobs.service import JobConfigError, JobSubmission


def test_a_valid_submission_is_the_train_configuration() -> None:
    config = JobSubmission(epochs=3, batch_size=8, datasets=["sim:nw-italy-v2"]).validated()
    assert (config.epochs, config.batch_size, config.datasets) == (3, 8, ["sim:nw-italy-v2"])


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"strategy": "ddp", "devices": "2"}, "strategy"),
        ({"num_nodes": 2}, "strategy"),
        ({"epochs": 0}, "epochs"),
        ({"promote": True, "tracking": False}, "promote"),
    ],
)
def test_refused_submissions_name_the_field(fields: dict, where: str) -> None:
    with pytest.raises(JobConfigError) as err:
        JobSubmission(**fields).validated()
    assert str(err.value).startswith(where)
