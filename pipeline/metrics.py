"""Prometheus metrics read from the ledger at each scrape (`lipdub metrics --port N`).

Nothing is counted in-process: every figure comes from Redis when Prometheus asks, so one
exporter serves a whole deployment (any number of workers), and a restart loses nothing.
Per batch (the `ACTIVE_BATCHES` most recent): items by state, spend, polls, and how long the
provider took per item (submit to its result, on average); for the deployment: the provider's
429s, live workers, the cool-down, the messages waiting in the queue, the steps waiting for
their countdown and the steps being run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline import keys
from pipeline.due import DueSteps, RunningSteps
from pipeline.heartbeat import Heartbeats
from pipeline.ledger import Ledger
from pipeline.states import ItemState
from pipeline.waiting import GateFacts

ACTIVE_BATCHES = 20
"""How many of the most recent batches are reported (finished ones included)."""


class LedgerCollector(Collector):
    """Reads the figures at each scrape. `queued()` counts the broker's waiting messages."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        queued: Callable[[], int],
        clock: Callable[[], float],
        queue: str = "lipdub",
    ) -> None:
        self.ledger = ledger
        self.queue_name = queue
        self.queued = queued
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        items = GaugeMetricFamily(
            "lipdub_items", "Items of a batch by state.", labels=["batch", "state"]
        )
        spent = GaugeMetricFamily("lipdub_spent_usd", "What a batch has spent.", labels=["batch"])
        polls = GaugeMetricFamily("lipdub_polls", "Result requests of a batch.", labels=["batch"])
        provider_s = GaugeMetricFamily(
            "lipdub_provider_seconds",
            "Mean time from an item's submit to its finished result at the provider.",
            labels=["batch"],
        )
        for batch_id in self.ledger.batch_ids(ACTIVE_BATCHES):
            batch = self.ledger.batch(batch_id)
            if batch is None:
                continue
            # The batch record's own counts and totals: a scrape reads no item.
            counts = batch.counts or Counter(
                r.get("state", "") for r in self.ledger.items(batch_id)
            )
            for state in ItemState:
                items.add_metric([batch_id, state.value], counts.get(state.value, 0))
            spent.add_metric(
                [batch_id], float(self.ledger.budget(batch.budget_scope)["spent_usd"] or 0)
            )
            polls.add_metric([batch_id], float(batch.raw.get("total:polls") or 0))
            done = float(batch.raw.get("total:provider_done") or 0)
            if done:
                provider_s.add_metric([batch_id], float(batch.raw["total:provider_s"]) / done)
        yield from (items, spent, polls, provider_s)
        client = self.ledger.redis
        yield GaugeMetricFamily(
            "lipdub_workers_alive",
            "Workers that beat within the last 30 s.",
            value=len(Heartbeats(client).alive(self.clock())),
        )
        yield GaugeMetricFamily(
            "lipdub_cooldown_seconds",
            "How long every worker still holds off after a 429.",
            value=GateFacts.read(client).cooling_s,
        )
        yield GaugeMetricFamily(
            "lipdub_queue_messages", "Step messages waiting in the broker.", value=self.queued()
        )
        yield GaugeMetricFamily(
            "lipdub_due_steps",
            "Steps waiting in Redis for their countdown (sent by a live worker when due).",
            value=DueSteps(client, self.queue_name).count(),
        )
        yield GaugeMetricFamily(
            "lipdub_running_steps",
            "Steps workers have taken and not finished.",
            value=len(RunningSteps(client).all()),
        )
        yield CounterMetricFamily(
            "lipdub_rate_limited",
            "429 answers the provider gave any worker (each starts the shared cool-down).",
            value=int(client.get(keys.RATE_LIMITED) or 0),
        )
