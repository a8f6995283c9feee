"""What each prediction cost, from the provider's billing records, over HTTP.

WaveSpeed's `POST /api/v3/billings/search` by `prediction_uuids`: a record from the
prediction's creation (order `pre`), `done` once charged. Its docs disagree on the price's
unit (USD in the field table, micro-USD integers in an example): both are read.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from tests.conftest import client_for, run_job, start_sandbox, wait_terminal


@pytest.mark.parametrize("unit", ["usd", "micro_usd"])
def test_a_completed_prediction_costs_its_charge_and_a_failed_one_nothing(tmp_path, media, unit):
    with start_sandbox(tmp_path, billing_price_unit=unit) as box:
        client = client_for(box)
        done = run_job(client, media["video_2s"], media["audio_2_4s"], "cut_off")
        refused = run_job(client, media["video_noface"], media["audio_2_4s"], "cut_off")
        assert (done.status, refused.status) == ("completed", "failed")
        charged = client.charges_usd([done.id, refused.id, "never-made"])
        bill = Decimal(httpx.get(f"{box.url}/_sandbox/bill", timeout=5).json()["billed_usd"])
    # 2 s of video at $0.134; the refused input costs nothing; an unknown id nothing
    assert charged == {done.id: Decimal("0.268"), refused.id: 0, "never-made": 0}
    assert sum(charged.values()) == bill


def test_a_price_only_held_is_no_charge_yet(tmp_path, media):
    with start_sandbox(tmp_path, processing_fixed_s=1.0) as box:
        client = client_for(box)
        created = client.submit(
            video_url=client.upload_media(media["video_1s"]),
            audio_url=client.upload_media(media["audio_2_4s"]),
            sync_mode="loop",
        )
        held = client.charges_usd([created.id])
        wait_terminal(client, created.id)
        after = client.charges_usd([created.id])
    assert held == {created.id: 0}
    assert after == {created.id: Decimal("0.134")}


def test_many_predictions_are_asked_about_in_batches_of_ids(tmp_path, media):
    with start_sandbox(tmp_path) as box:
        client = client_for(box)
        made = [
            run_job(client, media["video_1s"], media["audio_0_6s"], mode).id
            for mode in ("cut_off", "loop", "bounce")
        ]
        # far more ids than one call takes (50): the unknown ones cost nothing
        asked = made + [f"unknown-{n}" for n in range(120)]
        charged = client.charges_usd(asked)
    assert [charged[p] for p in made] == [Decimal("0.134")] * 3
    assert sum(charged.values()) == Decimal("0.402") and len(charged) == 123
