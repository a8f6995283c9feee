"""The Celery settings design.md fixes, derived from lipdub's settings."""

from __future__ import annotations

from pipeline.settings import Settings
from workers.app import celery_config, create_app


def test_redelivery_settings_are_consistent():
    settings = Settings()
    config = celery_config(settings)
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_ignore_result"] is True
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    timeout = config["broker_transport_options"]["visibility_timeout"]
    assert config["result_backend_transport_options"]["visibility_timeout"] == timeout
    assert timeout > config["task_time_limit"] > config["task_soft_time_limit"]
    assert timeout > settings.worker.max_countdown_s + config["task_time_limit"]
    # Tasks a dead worker left unacknowledged are looked for at least every tenth of it.
    options = config["broker_transport_options"]
    assert options["unacked_restore_throttle"] == 1
    assert options["unacked_restore_interval"] <= timeout / 10


def test_the_app_has_one_task_per_step_and_reads_no_settings_at_import():
    import workers.app

    assert "_app" in vars(workers.app) and workers.app._app is None
    app = create_app(Settings())
    names = {name for name in app.tasks if name.startswith("lipdub.")}
    steps = (
        "prepare", "submit", "reconcile", "poll", "collect", "finalize", "conclude", "notify",
        "watch",
    )  # fmt: skip
    assert names == {f"lipdub.{s}" for s in steps} | {"lipdub.schedule_tick"}


def test_time_critical_steps_are_consumed_before_uploads():
    from pipeline.flow import STEPS
    from workers.tasks import STEP_PRIORITY

    options = celery_config(Settings())["broker_transport_options"]
    assert options["queue_order_strategy"] == "priority"
    assert set(STEP_PRIORITY) == set(STEPS)
    assert set(STEP_PRIORITY.values()) <= set(options["priority_steps"])
    # (that a due poll really overtakes queued uploads: tests/integration/test_priorities.py)
