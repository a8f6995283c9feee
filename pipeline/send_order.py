"""The order a batch's items are sent to the provider in: the longest videos first.

With more items than the account has slots, a batch ends when its last item does. Sent in
manifest order, a long clip near the end of the manifest starts last and the batch waits for
it alone while the other slots idle; sent longest first, the short clips fill the slots
around the long ones at the end (the longest-processing-time-first rule: the makespan is
within 4/3 of the best schedule, against up to twice it for an arbitrary order). The
provider's processing time grows with the video's length, so the video's seconds order the
items; equal lengths keep their manifest order.

`batch.send_order = "manifest"` keeps the manifest's order: for a manifest that lists its most
urgent rows first, or a budget too small for the batch (with a partial budget, longest first
spends it on the long clips). The report lists items by row either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

SendOrder = Literal["longest_first", "manifest"]
T = TypeVar("T")


def in_send_order(items: Iterable[T], video_s: Callable[[T], float], order: SendOrder) -> list[T]:
    """The items in the order they are sent: by `video_s` (seconds), longest first, ties in
    their given order; or as given for `"manifest"`.

    >>> in_send_order([("a", 1.0), ("b", 3.0), ("c", 1.0), ("d", 2.0)], lambda i: i[1],
    ...               "longest_first")
    [('b', 3.0), ('d', 2.0), ('a', 1.0), ('c', 1.0)]
    >>> in_send_order([("a", 1.0), ("b", 3.0)], lambda i: i[1], "manifest")
    [('a', 1.0), ('b', 3.0)]
    """
    if order == "manifest":
        return list(items)
    return sorted(items, key=lambda item: -video_s(item))


def place_in_line(started_at: float, video_s: float, row: int, order: SendOrder) -> float:
    """An item's place in the line for the account's slots (`pipeline.gates`): lower goes
    first. Batches in the order they started (`started_at`, epoch seconds); within one, in
    its send order, less than a second past its start: earlier for a longer video
    (`"longest_first"`), or for an earlier manifest `row` (`"manifest"`).

    >>> longest = place_in_line(100.0, 60.0, 9, "longest_first")
    >>> longest < place_in_line(100.0, 20.0, 1, "longest_first") < 101.0
    True
    >>> place_in_line(100.0, 60.0, 9, "manifest") > place_in_line(100.0, 20.0, 1, "manifest")
    True
    >>> place_in_line(100.0, 60.0, 9, "manifest") < 101.0
    True
    """
    if order == "manifest":
        return started_at + min(max(row, 0), 999_999) * 1e-6
    return started_at + 1.0 / (2.0 + max(0.0, video_s))
