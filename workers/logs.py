"""Logging for the long-running commands: text lines, or one JSON object per line
(`LIPDUB_LOG__FORMAT=json`, through python-json-logger) for a log pipeline."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from pipeline.settings import LogFormat, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "processName", "message")


def configure_logging(settings: Settings, level: str | int = logging.INFO) -> None:
    """The root logger writes to stderr in the settings' format (replacing what was set)."""
    handler = logging.StreamHandler()
    if settings.log.format is LogFormat.JSON:
        handler.setFormatter(
            JsonFormatter(
                list(JSON_FIELDS),
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Warnings (Celery's about running as root, say) through the same handler and format.
    logging.captureWarnings(True)
    # httpx logs every URL it fetches; presigned URLs carry credentials and signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
