"""MLflow tracking of training runs and the model registry, configured only through Settings.

One job per module; import from the module, this package re-exports nothing:

* :mod:`heimdall.tracking.connection` — where tracking goes (TrackingTarget), the fail-fast preflight,
  ``connect`` and the one deliberate process-level setting (MLflow's HTTP/S3 client variables);
* :mod:`heimdall.tracking.run` — recording a training run (TrackedRun, ``start_run``, the run marker
  behind ``--resume``, per-epoch metrics, params/tags/metrics/artifacts and the ONNX model);
* :mod:`heimdall.tracking.replay` — reading a run back (``heimdall train --from-run``);
* :mod:`heimdall.tracking.registry` — ``heimdall-localizer`` versions and the ``champion`` alias;
* :mod:`heimdall.tracking.models` — downloading a registered or logged model (``models:/…``, ``runs:/…``).

Every MLflow call gets its tracking and registry URI explicitly (an ``MlflowClient`` per target, or the
``tracking_uri``/``registry_uri`` arguments), never MLflow's process-wide URI, so several threads can
track to different stores at once. mlflow is imported lazily: commands that never track stay fast.
Nothing here imports :mod:`heimdall.jobs`, :mod:`heimdall.cli` or :mod:`heimdall.evaluate.job`.
"""
