"""The Celery app and its tasks: thin wrappers that call pipeline/ (arrives with the pipeline issue)."""
