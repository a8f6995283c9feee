"""`make contract`: the smallest real job against the real API, checking every answer's shape.

    WAVESPEED_API_KEY=... python -m tests.contract.run [--base-url URL] [--poll-s 5]

It generates a one-second clip and a one-second tone, uploads both to the provider's media
store (`POST /api/v3/media/upload/binary`), reads the balance, asks a price quote, reads
the webhook secret, submits one `sync/lipsync-3` job, polls its result, finds it in the
list call, reads its billing record and the balance again (the charge must be the balance's
fall, whatever unit the price is in). Each answer is checked for the fields lipdub's
client relies on; what the documentation leaves open (does the list or the result show the
inputs? does a generated clip without a face fail, and with which code?) is printed as
observed. It prints what the run cost (the balance before and after).

Without a key it says so and exits 0, having checked nothing. It is not part of `make test`:
it spends real money (one second of video: about $0.13) and needs the internet.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from pipeline.errors import LipdubError
from pipeline.provider.client import ProviderClient
from pipeline.provider.models import Prediction
from pipeline.samples import write_audio, write_video

DEADLINE_S = 900.0


class Checks:
    """Named checks, each passed or failed with what was seen."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, seen: object) -> bool:
        self.rows.append((name, ok, str(seen)))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {seen}", flush=True)
        return ok

    def note(self, name: str, seen: object) -> None:
        print(f"note {name}: {seen}", flush=True)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.rows if not ok)


def _shape(raw: dict[str, Any], fields: tuple[str, ...]) -> tuple[bool, str]:
    missing = [name for name in fields if name not in raw]
    return not missing, ("fields " + ", ".join(fields)) if not missing else f"missing {missing}"


def run(base_url: str, key: str, *, poll_s: float, model: str) -> int:
    """The whole check; the exit code (0 when every shape held)."""
    checks = Checks()
    http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(60.0, connect=10.0))
    client = ProviderClient(http, api_key=SecretStr(key), model_path=model)
    try:
        before = client.balance_usd()
        checks.check("balance", before >= 0, f"${before}")
        quote = client.quote_usd({"duration": 1.0, "sync_mode": "cut_off"})
        checks.check("pricing quote for 1 s", quote >= 0, f"${quote}")
        ten = client.quote_usd({"duration": 10.0, "sync_mode": "cut_off"})
        checks.note("pricing quote for 10 s (does the quote follow the duration?)", f"${ten}")
        secret = client.webhook_secret().get_secret_value()
        checks.check("webhook secret", secret.startswith("whsec_"), "starts with whsec_")
        with tempfile.TemporaryDirectory(prefix="lipdub-contract-") as folder:
            video = write_video(Path(folder) / "clip.mp4", 1.0)
            audio = write_audio(Path(folder) / "tone.wav", 1.0)
            video_url, audio_url = client.upload_media(video), client.upload_media(audio)
        checks.check("upload", video_url.startswith("http"), "download_url given")
        sent_at = datetime.now(tz=UTC)
        made = client.submit(video_url=video_url, audio_url=audio_url, sync_mode="cut_off")
        ok, seen = _shape(made.raw, ("id", "status", "created_at"))
        checks.check("submit answer", ok, seen)
        done = _wait(client, made.id, poll_s)
        ok, seen = _shape(done.raw, ("id", "status", "outputs", "error"))
        checks.check(f"result ({done.status})", ok and done.terminal, seen)
        if done.status == "completed":
            checks.check("output", bool(done.outputs), done.outputs[:1])
        else:
            checks.note("failed task", f"code {done.code}, error {done.error!r}")
        checks.note("result shows inputs", done.inputs is not None)
        listed = list(
            client.iter_predictions(
                created_after=sent_at - timedelta(minutes=5),
                created_before=datetime.now(tz=UTC) + timedelta(minutes=5),
                model=model,
                max_pages=3,
            )
        )
        found = [p for p in listed if p.id == made.id]
        checks.check("list finds the prediction", len(found) == 1, f"{len(listed)} listed")
        if found:
            ok, seen = _shape(found[0].raw, ("id", "status", "created_at"))
            checks.check("list item", ok, seen)
            checks.note("list shows inputs", found[0].inputs is not None)
        charged = client.charges_usd([made.id])[made.id]
        after = client.balance_usd()
        # The billing docs disagree on the price's unit (USD or micro-USD): the balance tells.
        checks.check(
            "billing record's charge is the balance's fall",
            charged == before - after,
            f"billing ${charged}, balance fell ${before - after}",
        )
        print(f"cost of this run: ${before - after} (balance ${before} -> ${after})")
    except LipdubError as err:
        checks.check("the API answered", False, err)
    finally:
        client.close()
    print(f"{len(checks.rows) - checks.failed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


def _wait(client: ProviderClient, prediction_id: str, poll_s: float) -> Prediction:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        prediction = client.get_result(prediction_id)
        if prediction.terminal or time.monotonic() > deadline:
            return prediction
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="https://api.wavespeed.ai")
    parser.add_argument("--model", default="sync/lipsync-3")
    parser.add_argument("--poll-s", type=float, default=5.0, help="seconds between polls")
    args = parser.parse_args(argv)
    key = os.environ.get("WAVESPEED_API_KEY", "")
    if not key:
        print("WAVESPEED_API_KEY is not set: checked nothing (set it to run one paid job).")
        return 0
    return run(args.base_url, key, poll_s=args.poll_s, model=args.model)


if __name__ == "__main__":
    sys.exit(main())
