"""The application layer: what Heimdall does, as plain functions with typed requests and outcomes.

One module per use case — :mod:`.train`, :mod:`.evaluate`, :mod:`.simulate`, :mod:`.ingest`,
:mod:`.models` (and :mod:`.predict`), :mod:`.stations`, :mod:`.sessions` — each
``job(request, settings, …) -> outcome`` with pydantic requests and outcomes. They open the services,
connect to tracking and the registry, and orchestrate the layers below; they never read the
environment (``Settings`` is given) and never print: progress goes through a callback. The front
doors — ``heimdall.cli`` today, ``api`` and ``worker`` next — parse their input into a request, call
the job and present the outcome. Nothing below this package imports it.
"""
