"""Thin Celery tasks: each runs one pipeline step and schedules what the step returns.

A task carries only ids (never a URL, a key or a secret). Infrastructure trouble the step
could not absorb (Redis or S3 briefly away) retries the same step with a countdown; the step
itself is safe to run again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from pipeline import backoff, wiring
from pipeline.batches import BatchControl
from pipeline.due import DueSteps, Lease, RunningSteps
from pipeline.errors import DispatchError, LedgerError, LipdubError, SettingsError, StorageError
from pipeline.flow import STEPS, run_step
from pipeline.runtime import Runtime
from pipeline.schedules.config import load_schedules
from pipeline.schedules.runner import Scheduler
from pipeline.settings import Settings
from pipeline.steps import Next

log = logging.getLogger("lipdub.worker")

STEP_PRIORITY = {
    "poll": 0,
    "watch": 0,
    "submit": 1,
    "reconcile": 1,
    "collect": 2,
    "finalize": 3,
    "conclude": 3,
    "notify": 4,
    "prepare": 6,
}
"""Lower runs first. Time-critical steps (a poll due now, a freed slot's next submit) go
before uploads, which a large batch queues by the hundred at its start. A submit goes before
a collect: the poll that frees a slot sends both at once, and the account's slot stays idle
until the submit runs, while the collect only moves an output that is already made."""

INFRA_MAX_RETRIES = 20


class RuntimeHolder:
    """One Runtime per process, made after the fork (sockets are never shared across it)."""

    def __init__(self, factory: Callable[[], Runtime]) -> None:
        self._factory = factory
        self._runtime: Runtime | None = None
        self._due: DueSteps
        self._running: RunningSteps
        self._pid = 0
        self._lock = threading.Lock()

    def warm_up(self, **_: Any) -> None:
        """Build this process's Runtime now (a pool process has just started), so that its
        first task does not pay for creating the clients. Trouble waits for that task."""
        try:
            self.get()
        except LipdubError as err:
            log.warning("could not connect yet (%s); the first task will try again", err)

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime = self._factory()
                self._pid = os.getpid()
                self._due = DueSteps(
                    self._runtime.ledger.redis, self._runtime.settings.worker.queue
                )
                self._running = RunningSteps(self._runtime.ledger.redis)
            return self._runtime

    def due(self) -> DueSteps:
        """This process's view of the steps kept for later."""
        self.get()
        return self._due

    def running(self) -> RunningSteps:
        """This process's record of the steps it runs."""
        self.get()
        return self._running


class CeleryDispatcher:
    """Sends a `Next` as the matching task: at once, or, with a countdown, through the due
    steps kept in Redis (`pipeline.due`), which a live worker's pump sends when due.

    A batch's uploads go to the feed, which the pumps hand to the broker as it has room.
    With `hand_over_window` (the process that starts batches: `worker.queue_window`), an
    upload that finds the feed empty is handed over from here at once when the broker has
    fewer than that many waiting, instead of at the next pump's look (up to
    `workers.pump.PUMP_INTERVAL_S` later): a batch's first items, and each item of a batch
    whose uploads are slower than the workers, start that much sooner. A fuller feed is
    the pumps' to move, so a large batch's start costs no broker count per item.
    """

    def __init__(
        self,
        app: Celery,
        queue: str,
        due: DueSteps | Callable[[], DueSteps],
        *,
        hand_over_window: int = 0,
    ) -> None:
        self.app = app
        self.queue = queue
        self._due = due
        self.hand_over_window = hand_over_window

    @property
    def due(self) -> DueSteps:
        return self._due if isinstance(self._due, DueSteps) else self._due()

    def send(self, step: Next) -> None:
        try:
            if step.step == "prepare" and step.countdown_s <= 0:
                # A batch's uploads are fed to the broker as it has room (`workers.pump`).
                if self.due.feed([step]) == 1 and self.hand_over_window > 0:
                    self._hand_over()
                return
            if step.countdown_s > 0:
                self.due.schedule([step])
                return
        except LedgerError as err:
            raise DispatchError(
                f"the {step.step} step for {step.batch_id} could not be kept in Redis: {err}"
            ) from err
        self.send_now(step)

    def _hand_over(self) -> None:
        """Move the feed's head to the broker if it has room; trouble leaves it to the pumps
        (the step is in the feed, or leased to this process and sent again after the lease)."""
        try:
            with self.app.connection_or_acquire() as broker:  # the pool send_task uses
                hand_over_fed(self, broker, self.hand_over_window, limit=1)
        except (LedgerError, DispatchError, OperationalError, redis.RedisError, OSError) as err:
            log.info("an upload waits for a worker's pump: %s", err)

    def send_now(self, step: Next) -> None:
        """Hand the step to the broker to run as soon as a worker is free."""
        args: list[Any] = [step.batch_id, step.item_id]
        try:
            self.app.send_task(
                f"lipdub.{step.step}",
                args=args,
                queue=self.queue,
                priority=STEP_PRIORITY.get(step.step, 5),
            )
        except OperationalError as err:
            raise DispatchError(
                f"the broker did not take the {step.step} task for {step.batch_id}: {err}. "
                "Check that Redis is up (LIPDUB_REDIS__URL / LIPDUB_REDIS__BROKER_URL)."
            ) from err


def starting_dispatcher(app: Celery, settings: Settings, client: redis.Redis) -> CeleryDispatcher:
    """The dispatcher of a process that starts batches (the CLI, the Python API): it hands a
    batch's first uploads to the broker itself (`CeleryDispatcher.hand_over_window`)."""
    queue = settings.worker.queue
    return CeleryDispatcher(
        app, queue, due=DueSteps(client, queue), hand_over_window=settings.worker.queue_window
    )


def register_tasks(app: Celery, holder: RuntimeHolder, settings: Settings) -> None:
    """Register one task per step on `app`, and the schedules' tick (beat sends it)."""
    dispatcher = CeleryDispatcher(app, settings.worker.queue, due=holder.due)
    for step in STEPS:
        app.task(name=f"lipdub.{step}", bind=True, shared=False, max_retries=INFRA_MAX_RETRIES)(
            _make_task(step, holder, dispatcher)
        )

    def schedule_tick() -> None:
        """Do what the schedules say is due now (`pipeline.schedules.runner.Scheduler.tick`).
        Trouble is logged, not retried: the next tick, a few seconds on, tries again."""
        runtime = holder.get()
        try:
            # Read each time: an edited schedule file applies at the next tick.
            schedules = load_schedules(
                runtime.settings.schedule.file, runtime.settings.schedule.yaml
            )
            control = BatchControl(
                runtime.ledger,
                dispatcher,
                runtime.settings,
                clock=runtime.clock,
                storage=runtime.storage,  # a local inbox's files are uploaded from here
            )
            Scheduler.build(runtime.settings, schedules, control, runtime.storage.s3).tick()
        except SettingsError as err:
            log.error("schedule tick: %s; no schedule runs until it is fixed", err)
        except LipdubError as err:
            log.warning("schedule tick: %s; the next tick tries again", err)

    app.task(name="lipdub.schedule_tick", shared=False, ignore_result=True)(schedule_tick)


def _make_task(
    step: str, holder: RuntimeHolder, dispatcher: CeleryDispatcher
) -> Callable[..., None]:
    def run(self: Task, batch_id: str, item_id: str | None = None) -> None:
        runtime = holder.get()
        this = Next(step, batch_id, item_id)

        # Recorded as running when this worker received it (`StepLeases`); over once its
        # follow-ups are sent, or before a retry, whose message has the same task id.
        def end_lease() -> None:
            _end_lease(holder, str(self.request.id), this)

        try:
            following = run_step(runtime, step, batch_id, item_id)
        except (LedgerError, StorageError) as err:
            end_lease()
            countdown_s = backoff.TASK_INFRA.delay_s(self.request.retries + 1)
            log.warning("%s %s/%s: %s; again in %.0f s", step, batch_id, item_id, err, countdown_s)
            try:
                raise self.retry(countdown=countdown_s, exc=err) from err
            except Reject as unsent:
                # Celery could not send the retry (the broker is away too) and would drop
                # this message: keep it instead.
                raise _back_to_queue(step, batch_id, item_id) from unsent
        except LipdubError:
            end_lease()
            log.exception("%s %s/%s failed", step, batch_id, item_id)
            raise
        except BaseException:
            end_lease()  # a bug, a time limit: Celery says what happened
            raise
        try:
            runtime.ledger.expect(following, runtime.clock())
            for nxt in following:
                dispatcher.send(nxt)
        except (DispatchError, LedgerError) as err:
            # The step's work is recorded but its follow-up was not sent. Acknowledging this
            # message would strand the item: run the step again instead (it finds its work
            # done and sends the follow-up, once the item expects this step again).
            log.warning("%s %s/%s: %s", step, batch_id, item_id, err)
            with contextlib.suppress(LedgerError):
                runtime.ledger.expect([this], runtime.clock())
            raise _back_to_queue(step, batch_id, item_id) from err
        finally:
            end_lease()
        log.info(
            "%s %s/%s -> %s",
            step,
            batch_id,
            item_id or "-",
            ", ".join(
                f"{n.step}+{n.countdown_s:.1f}s" + (f" (waiting for {n.why})" if n.why else "")
                for n in following
            )
            or "done",
        )

    run.__name__ = f"lipdub_{step}"
    run.__doc__ = f"Run the `{step}` step, then schedule what it asks for."
    return run


class StepLeases:
    """Records each step a worker receives as running under the worker's name, in the
    worker's main process (Celery's `task_received`), from the moment the worker holds its
    message: if the worker dies, its heartbeat lapses and the sweeper sends the step again
    within a minute, instead of the broker's visibility timeout (`pipeline.due`).

    When Redis cannot take the record (it is restarting: the moment a broker restart drops
    the messages a worker was just handed), the record is kept here instead, so that the
    worker can still name the step (`workers.dropped`): written once Redis is back if the
    worker still holds the step, its message sent back if not."""

    UNRECORDED_MAX = 1_000
    """Records kept in memory at most (the oldest go first): a worker receives only a few
    messages while Redis is away."""

    def __init__(
        self, app: Celery, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self._running: RunningSteps | None = None
        self._unrecorded: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """A `task_received` receiver (for this app's workers only)."""
        if getattr(sender, "app", None) is not self.app:
            return
        name = str(getattr(request, "task_name", "") or "")
        if not name.startswith("lipdub.") or name.removeprefix("lipdub.") not in STEPS:
            return
        args = list(getattr(request, "args", None) or [])
        step = Next(name.removeprefix("lipdub."), str(args[0]), args[1] if len(args) > 1 else None)
        message = getattr(request, "message", None)
        lease = Lease(
            worker=str(request.hostname or ""),
            step=step,
            started_at=self.clock(),
            member=str(request.id),
            queue=self.settings.worker.queue,
            delivery_tag=str(getattr(message, "delivery_tag", "") or ""),
        )
        try:
            self.record(lease)
        except LedgerError as err:
            # The step is still run; the record waits here for Redis.
            self.keep(lease)
            log.warning(
                "%s %s/%s: not recorded as running yet: %s",
                step.step,
                step.batch_id,
                step.item_id or "-",
                err,
            )

    def record(self, lease: Lease) -> None:
        """Write `lease` to Redis (raises LedgerError when Redis cannot take it)."""
        if self._running is None:
            self._running = RunningSteps(wiring.redis_client(self.settings))
        self._running.start(
            lease.member,
            lease.worker,
            lease.step,
            lease.started_at,
            lease.queue,
            lease.delivery_tag,
        )

    def unrecorded(self) -> list[Lease]:
        """The records Redis could not take, oldest first."""
        with self._lock:
            return list(self._unrecorded.values())

    def settle(self, lease: Lease) -> None:
        """`lease` is dealt with (written, or its step sent back): forget it here."""
        with self._lock:
            self._unrecorded.pop(lease.member, None)

    def keep(self, lease: Lease) -> None:
        """Hold `lease` here until Redis takes it or its step is sent back."""
        with self._lock:
            self._unrecorded[lease.member] = lease
            while len(self._unrecorded) > self.UNRECORDED_MAX:
                del self._unrecorded[next(iter(self._unrecorded))]


def _end_lease(holder: RuntimeHolder, task_id: str, step: Next) -> None:
    """The step is over; a lease left behind (Redis away) is dropped by the sweeper later."""
    try:
        holder.running().end(task_id)
    except LedgerError as err:
        log.warning(
            "%s %s/%s: its running record stays: %s",
            step.step,
            step.batch_id,
            step.item_id or "-",
            err,
        )


def _back_to_queue(step: str, batch_id: str, item_id: str | None) -> Reject:
    """Reject the message with requeue: it runs again once the broker takes it back. If the
    broker is still away even that fails, and the message stays unacknowledged in Redis,
    which hands it out again after the visibility timeout. Either way it is not lost."""
    log.warning("%s %s/%s goes back to the queue", step, batch_id, item_id or "-")
    return Reject(f"{step} {batch_id}/{item_id or '-'}: the broker is unavailable", requeue=True)


def hand_over_fed(
    dispatcher: CeleryDispatcher,
    broker: Any,
    window: int,
    *,
    limit: int | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Move steps from the feed's head to the broker, one at a time, until `window` messages
    wait there (counted on the `broker` connection), `limit` were moved or `stopping()`; how
    many were moved. Each is leased to this process until the broker has it
    (`DueSteps.take_fed`), so one that dies between taking and sending leaves it to a pump."""
    due = dispatcher.due
    room = window - queued_messages(dispatcher.app, dispatcher.queue, broker)
    if limit is not None:
        room = min(room, limit)
    sent = 0
    while sent < room and not stopping():
        taken = due.take_fed(1)
        if not taken:
            break
        [(member, step)] = taken
        dispatcher.send_now(step)
        due.sent([member])
        sent += 1
    return sent


def queued_messages(app: Celery, queue: str, connection: Any = None) -> int:
    """Messages waiting in `queue` (every priority), by kombu's channel API: on `connection`
    where the caller keeps one (a thread that asks several times a second), else on a
    connection of its own for this call."""
    if connection is not None:
        return _declared_count(connection, queue)
    with app.connection_for_write() as fresh:
        return _declared_count(fresh, queue)


def _declared_count(connection: Any, queue: str) -> int:
    # Not passive: the transport knows a queue only once something declared it.
    declared = connection.default_channel.queue_declare(
        queue=queue, durable=True, auto_delete=False
    )
    return int(declared.message_count)
