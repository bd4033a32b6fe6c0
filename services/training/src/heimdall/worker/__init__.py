"""The Celery front door of the training service (``heimdall worker``): runs queued jobs."""
