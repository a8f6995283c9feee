"""Webhook signatures: the sandbox signs deliveries, our verifier accepts them and refuses
forged, stale and tampered ones."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.provider import webhooks
from tests.conftest import client_for, start_sandbox, wait_terminal

SECRET = "whsec_c2VjcmV0"


def test_sign_then_verify_round_trip():
    body = b'{"id": "p1"}'
    headers = webhooks.sign(SECRET, "msg_1", 1_700_000_000, body).as_dict()
    assert headers["webhook-signature"].startswith("v3,")
    assert webhooks.verify(SECRET, headers, body, now_s=1_700_000_010) == "msg_1"


def test_the_secret_is_used_without_its_prefix_and_not_base64_decoded():
    import hashlib
    import hmac

    expected = hmac.new(b"c2VjcmV0", b"msg_1.1700000000.{}", hashlib.sha256).hexdigest()
    assert webhooks.signature_hex(SECRET, "msg_1", 1_700_000_000, b"{}") == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-signature": "v3," + "0" * 64}, "does not match"),
        ({"webhook-timestamp": "1699999000"}, "300 s"),
        ({"webhook-id": ""}, "missing"),
        ({"webhook-timestamp": "yesterday"}, "not an integer"),
    ],
)
def test_forged_or_stale_deliveries_are_refused(change, reason):
    body = b'{"id": "p1"}'
    headers = {**webhooks.sign(SECRET, "msg_1", 1_700_000_000, body).as_dict(), **change}
    with pytest.raises(webhooks.WebhookRejected, match=reason):
        webhooks.verify(SECRET, headers, body, now_s=1_700_000_010)


def test_a_tampered_body_is_refused():
    headers = webhooks.sign(SECRET, "msg_1", 1_700_000_000, b'{"status": "failed"}').as_dict()
    with pytest.raises(webhooks.WebhookRejected):
        webhooks.verify(SECRET, headers, b'{"status": "completed"}', now_s=1_700_000_000)


class Receiver(BaseHTTPRequestHandler):
    received: list

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_sandbox_delivers_signed_webhooks_on_completion(sandbox, media):
    received: list = []
    handler = type("H", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = client_for(sandbox)
        prediction = client.submit(
            video_url=client.upload_media(media["video_1s"]),
            audio_url=client.upload_media(media["audio_0_6s"]),
            sync_mode="cut_off",
            webhook_url=f"http://127.0.0.1:{server.server_port}/hook",
        )
        wait_terminal(client, prediction.id)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        headers, body = received[0]
        secret = client.webhook_secret().get_secret_value()
        webhooks.verify(secret, headers, body, now_s=time.time())
        payload = json.loads(body)
        assert payload["id"] == prediction.id and payload["status"] == "completed"
    finally:
        server.shutdown()
        server.server_close()


class FailsFirst(BaseHTTPRequestHandler):
    """Answers the first delivery 503, later ones 200."""

    received: list

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(503 if len(self.received) == 1 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_retried_delivery_keeps_its_id_and_a_body_webhook_url_is_honoured(tmp_path, media):
    # Given a sandbox that retries deliveries, a receiver that fails the first one, and a
    # submit that names its webhook in the body (`webhook_url`, as one docs page shows it)
    received: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (FailsFirst,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with start_sandbox(tmp_path, webhook_attempts=3) as box:
            client = client_for(box)
            prediction = client.submit(
                video_url=client.upload_media(media["video_1s"]),
                audio_url=client.upload_media(media["audio_0_6s"]),
                sync_mode="cut_off",
                extra={"webhook_url": f"http://127.0.0.1:{server.server_port}/hook"},
            )
            wait_terminal(client, prediction.id)
            deadline = time.monotonic() + 10
            while len(received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            secret = client.webhook_secret().get_secret_value()
    finally:
        server.shutdown()
        server.server_close()
    # Then the retry carries the same id (the prediction's), each signed over its own timestamp
    assert len(received) == 2
    ids = [{k.lower(): v for k, v in headers.items()}["webhook-id"] for headers, _ in received]
    assert ids == [prediction.id, prediction.id]
    for headers, body in received:
        webhooks.verify(secret, headers, body, now_s=time.time())
        # ... and the body is the bare prediction, with its inputs
        assert json.loads(body)["input"]["sync_mode"] == "cut_off"
