"""Collect an item's output: stream it into the bucket, probe it, check its length, record cost.

The provider's URL is temporary, so the bytes are copied at once to `outputs/<batch>/<name>`.
The copy is then probed through a presigned URL and its duration checked against the
sync_mode rule with one frame of tolerance. Running twice overwrites the same key with the
same bytes.
"""

from __future__ import annotations

import contextlib
import logging
from decimal import Decimal

from pipeline.errors import MediaError, StorageError
from pipeline.flow.common import end, fail, load, resume, storage_retry_in
from pipeline.media import probe
from pipeline.records import Item
from pipeline.runtime import Runtime
from pipeline.states import ErrorKind, ItemState
from pipeline.steps import Next
from pipeline.storage import output_key
from pipeline.sync_modes import within_one_frame

COLLECTING = [ItemState.COLLECTING]
PROBE_URL_EXPIRY_S = 900
log = logging.getLogger("lipdub.collect")


def collect(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the collect step of one item whose prediction completed."""
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is not ItemState.COLLECTING:
        return resume(rt, item, ItemState.COLLECTING)
    if item.record.collect_started_at is None:
        rt.ledger.update_item(
            batch_id, item_id, ItemState.COLLECTING, {"collect_started_at": rt.clock()}
        )
    key = output_key(rt.storage.prefix, batch_id, item.record.output, item.record.output_folder)
    billable_s = item.record.billable_s
    cost = item.price_usd  # as the plan priced it: the provider's quote, or the price model
    try:
        size = rt.storage.copy_from_url(item.record.output_url, key, rt.http)
        url = rt.storage.presign(key, expiry_s=PROBE_URL_EXPIRY_S)
    except StorageError as err:
        return _collect_error(rt, item, str(err), cost)
    try:
        info = probe(url, timeout_s=rt.settings.media.probe_timeout_s)
    except MediaError as err:
        # S3 away between the copy and the probe looks the same as a broken output, so it is
        # tried again (copy and probe) for as long as storage trouble is; only then it fails.
        countdown_s = storage_retry_in(rt, item, "collect")
        if countdown_s is not None:
            log.warning("collect %s/%s: the copy could not be probed (tried again in %.0f s): %s",
                        batch_id, item_id, countdown_s, err)  # fmt: skip
            return [Next("collect", batch_id, item_id, countdown_s)]
        with contextlib.suppress(StorageError):
            rt.storage.delete(key)
        return _failed(rt, item, f"the output is not a readable video: {err}", cost)
    expected_s = item.record.expected_output_s
    fields: dict[str, object] = {
        "output_key": key,
        "output_bytes": size,
        "output_s": info.duration_s,
        "billable_s_final": billable_s,
        "cost_usd": str(cost),
    }
    if not within_one_frame(info.duration_s, expected_s):
        return fail(
            rt,
            item,
            COLLECTING,
            ErrorKind.OUTPUT,
            f"the output lasts {info.duration_s:.3f} s; sync_mode {item.record.sync_mode} "
            f"should give {expected_s:.3f} s (one frame of tolerance)",
            "The output is kept for inspection at its output key; report it to WaveSpeed.",
            extra=fields,
            cost_usd=cost,
        )
    # Remember the paid pair first: a crash right after still lets later batches reuse it.
    rt.ledger.complete_content(
        item.record.identity, item.member, key, rt.settings.worker.content_ttl_days * 86_400
    )
    return end(rt, item, COLLECTING, ItemState.COMPLETED, fields, cost_usd=cost)


def _collect_error(rt: Runtime, item: Item, error: str, cost: Decimal) -> list[Next]:
    """Storage trouble while collecting: try again later, for `storage.retry_for_s`. The
    item's output is recorded only after a whole copy was probed, so a half-written object
    is never taken for it."""
    countdown_s = storage_retry_in(rt, item, "collect")
    if countdown_s is None:
        return _failed(rt, item, error, cost)
    log.warning(
        "collect %s/%s tried again in %.0f s: %s", item.batch_id, item.id, countdown_s, error
    )
    return [Next("collect", item.batch_id, item.id, countdown_s)]


def _failed(rt: Runtime, item: Item, error: str, cost: Decimal) -> list[Next]:
    return fail(
        rt,
        item,
        COLLECTING,
        ErrorKind.OUTPUT,
        error,
        "The prediction was paid for; retry the item to collect it again (no new charge).",
        extra={"cost_usd": str(cost)},
        cost_usd=cost,
    )
