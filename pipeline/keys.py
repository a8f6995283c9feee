"""Every Redis key lipdub writes, in one place, with its lifetime.

    lipdub:batches                       zset  batch id -> created epoch s     kept (the index of records)
    lipdub:batch:<b>                     hash  the batch record, with its items   kept (the record)
                                               per state (`n:<state>`) and totals
                                               (`total:polls`, ...), kept by each move
    lipdub:batch:<b>:items               list  item ids in manifest order       kept
    lipdub:batch:<b>:done                set   ids of items in a final state    kept
                                               (compacted ones leave it: the batch
                                               counts them, `done_compacted`)
    lipdub:batch:<b>:finalizing          str   the finalizer's guard            the task time limit
    lipdub:batch:<b>:notify              str   the batch's own notice URLs (JSON; CLAIM_TTL_S
                                               secrets: never in a report or task)
    lipdub:item:<b>:<i>                  hash  the item record                  kept; a completed one
                                               until its batch is compacted
    lipdub:batch:<b>:kept                hash  a compacted batch's completed    as long as the latest of
                                               items, packed                    their pairs' claims (at
                                               (`pipeline.ledger.kept`)         least CLAIM_TTL_S after
                                                                                the batch finished)
    lipdub:budget:<scope>                hash  limit, reserved, spent (micro-USD) kept while its batch is
    lipdub:content:<identity>            hash  who pays for a (video, audio, mode, model) and its output
                                               claimed: CLAIM_TTL_S; completed: worker.content_ttl_days
    lipdub:prediction:<p>                str   the item a prediction id belongs to CLAIM_TTL_S
    lipdub:webhook:<id>:<ts>             str   a webhook delivery already taken   WEBHOOK_SEEN_TTL_S
    lipdub:submits                       zset  POSTs whose prediction is not known yet CLAIM_TTL_S, refreshed
                                               (`<batch>:<item>` -> intent epoch s)
    lipdub:submits:unknown               zset  POSTs whose answer was lost, not      UNKNOWN_SUBMITS_TTL_S,
                                               yet reconciled (-> epoch s)         refreshed
    lipdub:clock                         list  bounds on the provider's clock offset CLOCK_TTL_S, refreshed
                                               from the last CLOCK_SAMPLES answered submits
    lipdub:observed:<p>                  hash  what was seen of a prediction not (yet) ours: CLAIM_TTL_S
                                               its inputs (a webhook), its output's seconds
    lipdub:gate:slots                    zset  in-flight predictions -> lease end SLOT_KEY_TTL_S, refreshed
    lipdub:gate:slot_waiters             zset  items waiting for a slot -> place   SLOT_KEY_TTL_S, refreshed
                                               in line (`send_order.place_in_line`)
    lipdub:gate:slot_turn                str   the item whose POST goes to the     gates.TURN_LEASE_S
                                               provider's queue next (`gates`)
    lipdub:gate:starts                   zset  start reservations -> start time     2 windows past the
                                               (planned, or made)                  furthest, refreshed
    lipdub:gate:starts:made              zset  starts made -> when the provider     2 windows, refreshed
                                               counted them by (passed, answered)
    lipdub:gate:cooldown                 str   a 429 hold-off for every worker     Retry-After
    lipdub:gate:rate_limited             str   429s counted (for the metrics)      kept
    throttled:v1:gcra:lipdub:polls      (throttled-py) the poll-rate GCRA           expires by itself
    lipdub:schedule:<s>:fired            str   the latest fire time handled (epoch s) kept
    lipdub:schedule:<s>:last             hash  the last run's outcome               kept
    lipdub:schedule:<s>:pickup:<p>       hash  one manifest's pickup: claim, batch   kept
    lipdub:schedule:<s>:parked           zset  items waiting for the window/budget  SLOT_KEY_TTL_S, refreshed
    lipdub:schedule:beat                 str   the scheduler's lock (one beat acts) schedule.lock_timeout_s
    lipdub:notice:<event>                hash  a notification: text, attempts, sent ONCE_TTL_S
    lipdub:workers                       zset  worker name -> last heartbeat (epoch s) entries older than LIVE_S dropped
    lipdub:retention                     zset  finished batches -> finished epoch s until compacted
    lipdub:timing:<model>:<mode>         list  the provider's recent processing      TIMING_TTL_S, refreshed
                                               times ([video s, s]; the last 50)
    lipdub:feed:<queue>                  list  steps waiting for room in the broker until a pump sends them
                                               (a batch's uploads, in order)
    lipdub:due:<queue>                   zset  steps waiting for their countdown  until a live worker's pump
                                               (`["step","b","i"]` -> due epoch s, Redis's clock) sends them
    lipdub:due:<queue>:sending           zset  steps a pump took -> its lease end  until sent (or re-taken)
    lipdub:running                       zset  task ids of steps being run        until the step ends; a dead
                                               -> since (epoch s)                 worker's are sent again
    lipdub:running:steps                 hash  task id -> [worker, step, b, i]    as lipdub:running
    lipdub:worker:<name>                 str   the worker's last heartbeat (JSON)   heartbeat.LIVE_S

"Kept" keys are the record of a batch: the report is rendered from them alone, so they have no
TTL. A finished batch's completed items shrink to a few fields, packed in one hash per batch,
`ledger.retention_days` after it finished (`pipeline.retention`, `lipdub prune`), and then
lapse with their pairs' claims; its report stays in the bucket.
"""

from __future__ import annotations

PREFIX = "lipdub"
BATCH_INDEX = f"{PREFIX}:batches"
SLOTS = f"{PREFIX}:gate:slots"
SLOT_WAITERS = f"{PREFIX}:gate:slot_waiters"
SLOT_TURN = f"{PREFIX}:gate:slot_turn"
START_LOG = f"{PREFIX}:gate:starts"
STARTS_MADE = f"{PREFIX}:gate:starts:made"
COOLDOWN = f"{PREFIX}:gate:cooldown"
RATE_LIMITED = f"{PREFIX}:gate:rate_limited"
POLLS_LIMITER = f"{PREFIX}:polls"
WORKERS = f"{PREFIX}:workers"
TO_COMPACT = f"{PREFIX}:retention"
RUNNING = f"{PREFIX}:running"
RUNNING_STEPS = f"{PREFIX}:running:steps"

PROVIDER_HISTORY_S = 7 * 24 * 3600
"""How long the provider's list shows a prediction (7 days, documented)."""
CLAIM_TTL_S = 8 * 24 * 3600
"""An unfinished claim outlives the provider's 7-day history, then lapses."""
SLOT_KEY_TTL_S = 8 * 24 * 3600
ONCE_TTL_S = 8 * 24 * 3600
WEBHOOK_SEEN_TTL_S = 3600
"""Longer than a delivery stays fresh (300 s), so a replay within its freshness is caught."""


def batch(batch_id: str) -> str:
    """The batch record."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_items(batch_id: str) -> str:
    """The batch's item ids, in manifest order."""
    return f"{PREFIX}:batch:{batch_id}:items"


def batch_done(batch_id: str) -> str:
    """Ids of the batch's items that reached a final state (but compacted ones)."""
    return f"{PREFIX}:batch:{batch_id}:done"


def batch_kept(batch_id: str) -> str:
    """The batch's compacted items, packed (`pipeline.ledger.kept`)."""
    return f"{PREFIX}:batch:{batch_id}:kept"


def batch_finalizing(batch_id: str) -> str:
    """Held while one process writes the batch's report."""
    return f"{PREFIX}:batch:{batch_id}:finalizing"


def batch_notify(batch_id: str) -> str:
    """Where a batch's own notices go (`lipdub run --notify`): secrets, kept apart."""
    return f"{PREFIX}:batch:{batch_id}:notify"


def item(batch_id: str, item_id: str) -> str:
    """One item's record."""
    return f"{PREFIX}:item:{batch_id}:{item_id}"


def budget(scope: str) -> str:
    """A budget (a batch's, or a schedule's nightly one)."""
    return f"{PREFIX}:budget:{scope}"


def content(identity: str) -> str:
    """Who pays for this pair, and where its output is once paid for."""
    return f"{PREFIX}:content:{identity}"


def slot_member(batch_id: str, item_id: str) -> str:
    """An item's name in the concurrency-slot set (batch ids never hold a colon)."""
    return f"{batch_id}:{item_id}"


def slot_member_ids(member: str) -> tuple[str, str]:
    """(batch id, item id) of a slot member.

    >>> slot_member_ids("b20261124-031305-e046ca:ep1.de")
    ('b20261124-031305-e046ca', 'ep1.de')
    """
    batch_id, item_id = member.split(":", 1)
    return batch_id, item_id


def prediction(prediction_id: str) -> str:
    """The item (`<batch>:<item>`) a prediction was made for."""
    return f"{PREFIX}:prediction:{prediction_id}"


def webhook_seen(webhook_id: str, timestamp_s: str) -> str:
    """Set when a webhook delivery was taken. The provider's retries keep the id (its
    example gives the prediction's) with a new timestamp and signature, so a delivery is
    its id and timestamp: the same pair again is a replay."""
    return f"{PREFIX}:webhook:{webhook_id}:{timestamp_s}"


UNSETTLED_SUBMITS = f"{PREFIX}:submits"
UNKNOWN_SUBMITS = f"{PREFIX}:submits:unknown"
UNKNOWN_SUBMITS_TTL_S = 3600
"""Refreshed at each entry: entries outlive the window they count in (`flow.common`)."""
CLOCK = f"{PREFIX}:clock"
CLOCK_SAMPLES = 50
CLOCK_TTL_S = 24 * 3600
"""Clock offsets drift: a day-old measure is dropped rather than trusted."""


def observed(prediction_id: str) -> str:
    """What was observed of a prediction that no item has claimed (yet)."""
    return f"{PREFIX}:observed:{prediction_id}"


def schedule(name: str, part: str) -> str:
    """A schedule's state: `fired`, `last`, `parked`, or `pickup:<id>`."""
    return f"{PREFIX}:schedule:{name}:{part}"


BEAT_LOCK = f"{PREFIX}:schedule:beat"


def notice(event: str) -> str:
    """A notification, posted once per event and sent until it is delivered."""
    return f"{PREFIX}:notice:{event}"


TIMING_TTL_S = 30 * 24 * 3600


def feed(queue: str) -> str:
    """Uploads waiting for room in the broker's `queue` (its workers' pumps feed them)."""
    return f"{PREFIX}:feed:{queue}"


def due(queue: str) -> str:
    """Steps for `queue` waiting for their countdown."""
    return f"{PREFIX}:due:{queue}"


def due_sending(queue: str) -> str:
    """Steps for `queue` a pump took and has not sent yet."""
    return f"{PREFIX}:due:{queue}:sending"


def timing(model: str, sync_mode: str) -> str:
    """The provider's recent processing times for a model and sync mode."""
    return f"{PREFIX}:timing:{model}:{sync_mode}"


def watched(prediction_id: str) -> str:
    """Set when the account's watch saw the prediction completed and asked for its poll."""
    return f"{PREFIX}:watched:{prediction_id}"


def timing_scouts(model: str, sync_mode: str) -> str:
    """How many predictions scouted for a line not yet learned (`processing_time.SCOUTS`)."""
    return f"{PREFIX}:timing-scouts:{model}:{sync_mode}"


def worker(name: str) -> str:
    """A worker's last heartbeat."""
    return f"{PREFIX}:worker:{name}"
