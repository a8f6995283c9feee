"""The ledger's Redis client parses Redis's answers in C (hiredis): redis-py's pure-Python
parser was the largest share of a step's time (docs/performance.md, row 5), and redis-py falls
back to it without a word when hiredis is missing or older than it supports."""

from __future__ import annotations

from pipeline import wiring
from pipeline.settings import Settings


def test_the_ledgers_client_parses_answers_with_hiredis():
    # Given the client workers and the CLI build for the ledger
    client = wiring.redis_client(Settings(redis={"url": "redis://127.0.0.1:1/0"}))
    # When it makes a connection (nothing is sent until it is used)
    connection = client.connection_pool.make_connection()
    # Then hiredis parses its answers
    assert type(connection._parser).__name__ == "_HiredisParser"
