"""First polls aimed at the time the provider has been taking, learned from the processing
times it reports, on the real parts (Redis, S3, the sandbox over HTTP; the test's clock)."""

from __future__ import annotations

import pytest

from pipeline.processing_time import ProcessingTimes
from tests.conftest import start_sandbox
from tests.integration.stack import plan, stack_settings, write_manifest
from tests.integration.test_durability import Steps

pytestmark = pytest.mark.slow

# The configured expectation a user has not tuned: 20 s + 1 s per video second.
POLLING = {
    "expected_fixed_s": 20.0,
    "expected_per_video_s": 1.0,
    "first_poll_min_s": 0.2,
    "max_interval_s": 60.0,
    "item_deadline_s": 3_000.0,
}


def _first_polls(s: Steps, batch_id: str) -> list[float]:
    return [float(r["poll_interval_s"]) for r in s.rt.ledger.items(batch_id)]


@pytest.mark.parametrize("learn", [True, False])
def test_first_polls_follow_the_providers_own_processing_times(
    tmp_path, redis_url, s3_server, bucket, learn
):
    # Given a provider that takes 0.3 s + 0.1 s per video second (it reports it), and
    # a first batch that taught lipdub so
    with start_sandbox(tmp_path, processing_fixed_s=0.3, processing_per_video_s=0.1) as sandbox:
        settings = stack_settings(
            sandbox_url=sandbox.url, redis_url=redis_url, s3_url=s3_server.url, bucket=bucket,
            polling={**POLLING, "learn": learn}, media={"cache_dir": tmp_path / "cache"},
        )  # fmt: skip
        s = Steps(settings)
        first = [(f"a{n}", 1.0 + n, 1.0, "cut_off") for n in range(4)]
        taught = s.control.start(plan(write_manifest(tmp_path / "a", first), settings))
        s.loop.run()
        # When the next batch's items are submitted
        later = [("b0", 2.5, 1.0, "cut_off"), ("b1", 6.5, 1.0, "cut_off")]
        batch_id = s.control.start(plan(write_manifest(tmp_path / "b", later), settings))
        s.loop.run(stop=lambda: all(r["state"] != "pending" and r["state"] != "ready"
                                    and r.get("poll_interval_s")
                                    for r in s.rt.ledger.items(batch_id)))  # fmt: skip
        line = ProcessingTimes(s.rt.ledger.redis).line(settings.provider.model_path, "cut_off")
        polls = _first_polls(s, batch_id)
        s.loop.run()
        s.close()
    assert set(s.states(taught).values()) == {"completed"}
    if learn:
        # Then each first poll comes when the provider should be done, not 20 s on
        assert line is not None and line.per_video_s == pytest.approx(0.1, abs=0.05)
        assert all(p < 3.0 for p in polls), polls
        assert polls[1] > polls[0]  # a longer video is looked at later
    else:
        # Or, with learning off, at the configured expectation
        assert polls == pytest.approx([22.5, 26.5], abs=0.1)
