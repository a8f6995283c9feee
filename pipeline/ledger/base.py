"""The ledger's connection: its Redis client, its scripts, its durable writes, and the
conversion of every Redis error into LedgerError."""

from __future__ import annotations

from typing import Any

import redis

from pipeline.durability import DurableWrites
from pipeline.errors import DurabilityError, LedgerError
from pipeline.lua import lua_script


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

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except redis.RedisError as err:
            raise LedgerError(f"the ledger (Redis) failed: {type(err).__name__}: {err}") from err
