"""An item whose step died (or whose Redis failed) between its move to a final state and
what follows it (its slot back, its reservation settled into the spend) is settled all the
same: by the redelivered step that finds it ended, or by the finalizer before it writes the
report. On the real parts (Redis, S3, the sandbox over HTTP; one worker's steps)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from pipeline import keys
from pipeline.flow import run_step
from pipeline.ledger.budgets import to_micros
from tests.integration.stack import plan, write_manifest
from tests.integration.test_durability import Steps, stepped_stack

pytestmark = pytest.mark.slow

ROWS = [("first", 1.0, 0.6, "cut_off"), ("second", 1.4, 0.7, "cut_off")]


def as_if_died_after_the_move(s: Steps, batch_id: str, item_id: str) -> Decimal:
    """Put back what the step's follow-up changed after the item's move to `completed`: its
    reservation unsettled in the budget, its slot held. Returns the item's cost."""
    client = s.rt.ledger.redis
    item = keys.item(batch_id, item_id)
    record = client.hgetall(item)
    held, cost = to_micros(Decimal(record["price_usd"])), int(record["cost_micros"])
    budget = keys.budget(batch_id)
    client.hincrby(budget, "spent_micros", -cost)
    client.hincrby(budget, "reserved_micros", held)
    client.hset(item, mapping={"reserved_micros": held, "settled": ""})
    client.zadd(keys.SLOTS, {keys.slot_member(batch_id, item_id): time.time() + 3600})
    return Decimal(record["cost_usd"])


def test_an_item_ended_by_a_step_that_died_before_settling_is_in_the_books(
    tmp_path, redis_url, s3_server, bucket
):
    # Given a batch of two items run until only its finalize is left
    with stepped_stack(tmp_path, redis_url, s3_server.url, bucket) as s:
        settings = s.settings
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ROWS), settings))
        s.loop.run(stop=lambda: any(n.step == "finalize" for n in s.loop.pending()))
        ledger = s.rt.ledger
        assert set(s.states(batch_id).values()) == {"completed"}
        booked = ledger.budget(batch_id)["spent_usd"]
        # and both items' steps having died after their moves, before what follows
        costs = {n: as_if_died_after_the_move(s, batch_id, n) for n, *_ in ROWS}
        assert ledger.budget(batch_id)["spent_usd"] == booked - sum(costs.values())
        assert s.rt.gates.in_flight() == 2
        # When the second item's step is delivered again (it finds the item ended)
        run_step(s.rt, "collect", batch_id, "second")
        # Then that item is settled and its slot free, once: running it again changes nothing
        assert ledger.budget(batch_id)["spent_usd"] == booked - costs["first"]
        run_step(s.rt, "collect", batch_id, "second")
        assert ledger.budget(batch_id)["spent_usd"] == booked - costs["first"]
        assert s.rt.gates.in_flight() == 1
        # And when the finalizer runs before the first's step comes back (every other step
        # held back), it settles that one before the report reads the books
        for name in {n.step for n in s.loop.pending()} - {"finalize"}:
            s.loop.take(name)
        s.loop.run()
        report = s.control.report(batch_id)
    assert ledger.budget(batch_id)["spent_usd"] == booked == sum(costs.values())
    assert ledger.budget(batch_id)["reserved_usd"] == 0
    assert Decimal(report["spent_usd"]) == booked
    assert s.rt.gates.in_flight() == 0
