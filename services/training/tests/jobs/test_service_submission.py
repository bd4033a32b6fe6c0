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


def test_a_job_offers_every_train_option_but_the_local_ones() -> None:
    from heimdall.jobs.train import TrainRequest

    local_only = {"output_dir", "config", "resume", "progress"}
    assert set(JobSubmission.model_fields) == set(TrainRequest.model_fields) - local_only


def test_the_new_train_options_reach_the_configuration() -> None:
    config = JobSubmission(
        receiver_dropout=0.2, localizer="radiomap", init_from="models:/heimdall-localizer@champion"
    ).validated()
    assert (config.receiver_dropout, config.model.localizer) == (0.2, "radiomap")
    assert config.init_from == "models:/heimdall-localizer@champion"


@pytest.mark.parametrize("path", ["/srv/heimdall/models/run-1", "models/run-1", "../run"])
def test_a_job_never_starts_from_a_server_path(path: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not from a path on the server"):
        JobSubmission(init_from=path)


def test_a_bad_localizer_is_named() -> None:
    with pytest.raises(JobConfigError) as err:
        JobSubmission(localizer="oracle").validated()
    assert str(err.value).startswith("model.localizer")
