"""The Celery app, its tasks (thin wrappers that call pipeline/) and the command line."""
