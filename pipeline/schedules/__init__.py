"""Overnight schedules: configuration, windows, budgets, inboxes, notifications.

`config` reads `configs/schedule.yaml`; `timing` decides when a schedule fires and what a
missed fire time means; `window` says when submits may run and which night they spend;
`gate` holds a scheduled batch's submits to both; `inbox` and `runner` pick manifests up
once; `conclude` files them with their report; `notices` tells someone; `lock` keeps one
scheduler acting. Nothing here imports Celery: `workers/beat.py` and `workers/tasks.py` do.
"""
