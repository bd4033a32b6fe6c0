"""The HTTP front door of the training service (``heimdall serve``): FastAPI over :mod:`heimdall.jobs`."""

from heimdall.api.app import create_app

__all__ = ["create_app"]
