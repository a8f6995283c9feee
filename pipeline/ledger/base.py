"""The ledger's connection: its Redis client, its scripts, its durable writes, and the
conversion of every Redis error into LedgerError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pipeline.durability import DurableWrites
from pipeline.errors import DurabilityError, LedgerError, LedgerUnreachable
from pipeline.lua import lua_script

T = TypeVar("T")

_HOLD_BACKOFF = ExponentialBackoff(cap=1.0, base=0.1)
"""Between tries of a held write: 0.2, 0.4, 0.8, then 1 s (redis-py counts from 1 failure)."""


def hold_retries(for_s: float) -> int:
    """How many tries after the first make the waits between them add up to `for_s`.

    >>> hold_retries(0.0), hold_retries(1.4), hold_retries(60.0)
    (0, 3, 62)
    """
    waited_s, retries = 0.0, 0
    while waited_s < for_s:
        retries += 1
        waited_s += _HOLD_BACKOFF.compute(retries)
    return retries


class LedgerStore:
    """What every part of the ledger shares (see `pipeline.ledger.Ledger`)."""

    def __init__(self, client: redis.Redis, durable: DurableWrites | None = None) -> None:
        self.redis = client
        self.durable = durable
        self._transition = client.register_script(lua_script("transition.lua"))
        self._reserve = client.register_script(lua_script("reserve.lua"))
        self._settle = client.register_script(lua_script("settle.lua"))
        self._unreserve = client.register_script(lua_script("unreserve.lua"))
        self._claim = client.register_script(lua_script("claim.lua"))
        self._release_claim = client.register_script(lua_script("release_claim.lua"))
        self._forget_compacted = client.register_script(lua_script("forget_compacted.lua"))

    def ping(self) -> None:
        """Check that Redis answers (LedgerError if not)."""
        self._call(self.redis.ping)

    def durability_refusal(self) -> str | None:
        """Why this ledger cannot make a submit's intent durable, or None when it can (or
        makes no durable writes). Redis trouble raises LedgerError."""
        if self.durable is None:
            return None
        try:
            self._call(self.durable.guarantee)
        except DurabilityError as err:
            return str(err)
        return None

    def _durably(self, script_keys: list[str], args: list[str]) -> Any:
        assert self.durable is not None
        guarantee = self.durable.guarantee()
        if guarantee.wait is None:
            return self._transition(keys=script_keys, args=args)
        # One connection, the wait right behind the write; no MULTI (the wait would not block).
        pipe = self.redis.pipeline(transaction=False)
        self._transition(keys=script_keys, args=args, client=pipe)
        pipe.execute_command(*guarantee.wait)  # type: ignore[no-untyped-call]
        try:
            result, reply = pipe.execute()
        except redis.ResponseError:
            self.durable.forget()  # e.g. AOF turned off since: ask the server again next time
            raise
        if not guarantee.satisfied(reply):
            self.durable.forget()
            raise DurabilityError(
                f"the write was not made durable in time ({guarantee.wait[0]} answered {reply}); "
                f"{guarantee.summary.split(':')[0]} needs {guarantee.needs}"
            )
        return result

    def hold(self, action: Callable[[], T], *, for_s: float) -> T:
        """Run a ledger call, trying again while Redis cannot be reached (restarting, failing
        over, loading its data) for about `for_s` seconds; then LedgerUnreachable.

        Only for a write that must not be lost once made: the prediction id a paid POST
        answered with. The step cannot be run again later instead, because the broker that
        would bring it back is the same Redis, and the answer lives only in this process.
        A refusal (LedgerError, not unreachable) is raised at once."""
        retry = Retry(_HOLD_BACKOFF, hold_retries(for_s), supported_errors=(LedgerUnreachable,))
        return retry.call_with_retry(action, lambda _err: None)

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as err:
            # BusyLoadingError (a restarted Redis reading its AOF) is a ConnectionError too.
            raise LedgerUnreachable(
                f"the ledger (Redis) could not be reached: {type(err).__name__}: {err}"
            ) from err
        except redis.RedisError as err:
            raise LedgerError(f"the ledger (Redis) failed: {type(err).__name__}: {err}") from err
