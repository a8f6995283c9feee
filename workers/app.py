"""The Celery app: the settings that make a redelivered task safe, and one task per step.

    celery -A workers.app worker --pool=prefork --concurrency=4

`create_app(settings)` builds an app for given settings (tests, the demo); the module's `app`
is built from the environment the first time something asks for it, so importing this module
reads no settings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutdown

from pipeline.runtime import Runtime
from pipeline.settings import Settings, load_settings
from workers.beat import beat_config
from workers.dropped import DroppedSteps
from workers.pulse import Pulse
from workers.pump import Pump
from workers.sweeper import Sweeper
from workers.tasks import RuntimeHolder, StepLeases, register_tasks


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings. Redelivery after a crash is what makes tasks idempotent by necessity:
    acks late, rejected on worker loss, one message prefetched, and a visibility timeout
    above every countdown and time limit (validated in WorkerSettings)."""
    worker = settings.worker
    transport = {
        "visibility_timeout": worker.visibility_timeout_s,
        # Priorities (workers.tasks.STEP_PRIORITY): polls and submits must not queue behind
        # a backlog of uploads. The Redis transport keeps one list per step, 0 first.
        "priority_steps": list(range(10)),
        "queue_order_strategy": "priority",
        # The tasks of a worker that died without warning come back once their visibility
        # timeout passes; look for them often enough that they do not wait much longer.
        "unacked_restore_interval": restore_interval_s(worker.visibility_timeout_s),
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.redis.effective_broker_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A step holding a paid POST open when the broker's connection drops must live to
        # record the answer (the ledger holds that write through the outage); its restored
        # message may run it a second time meanwhile, which every step is safe to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_time_limit": worker.task_time_limit_s,
        "task_soft_time_limit": worker.task_soft_time_limit_s,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": worker.queue,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": worker.task_events,
        "task_send_sent_event": worker.task_events,
    }


def restore_interval_s(visibility_timeout_s: int) -> float:
    """How often a worker looks for tasks left unacknowledged by a dead one: a tenth of the
    visibility timeout, between 1 and 30 s (a cheap, bounded Redis scan each time).

    >>> restore_interval_s(3600), restore_interval_s(15)
    (30.0, 1.5)
    """
    return min(30.0, max(1.0, visibility_timeout_s / 10))


def create_app(
    settings: Settings | None = None,
    *,
    runtime_factory: Callable[[], Runtime] | None = None,
) -> Celery:
    """A Celery app with lipdub's tasks. `runtime_factory` replaces the clients (tests)."""
    settings = settings or load_settings()
    # Celery warns, at every lost connection, that a future default will cancel running
    # steps; lipdub sets it (False, see celery_config), so the warning only misleads.
    warnings.filterwarnings(
        "ignore", message=r"\s*In Celery 5\.1 we introduced", category=CPendingDeprecationWarning
    )
    app = Celery("lipdub", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.update(beat_config(settings))
    holder = RuntimeHolder(runtime_factory or (lambda: Runtime.from_settings(settings)))
    register_tasks(app, holder, settings)
    worker_process_init.connect(holder.warm_up, weak=False)
    # Each step a worker holds is recorded as running under its name (`pipeline.due`).
    leases = StepLeases(app, settings)
    task_received.connect(leases.received, weak=False)
    # Only a worker's main process gets worker_ready: one sweeper thread per worker.
    sweeper = Sweeper(app, settings)
    worker_ready.connect(sweeper.start, weak=False)
    worker_shutdown.connect(sweeper.stop, weak=False)
    # Live workers are known to `lipdub workers` and `lipdub status` by their heartbeats.
    # ... and each beat sends back the steps it was handed and dropped (`workers.dropped`).
    pulse = Pulse(app, settings, DroppedSteps(app, leases))
    worker_ready.connect(pulse.start, weak=False)
    worker_shutdown.connect(pulse.stop, weak=False)
    # Steps with a countdown wait in Redis; every live worker's pump sends them when due.
    pump = Pump(app, settings)
    worker_ready.connect(pump.start, weak=False)
    worker_shutdown.connect(pump.stop, weak=False)
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` looks up `app`; build it on first use, from the environment.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
