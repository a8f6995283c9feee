"""Probing generated media in every container, streaming hashes, and the probe cache."""

import hashlib
import shutil
import tracemalloc

import pytest

from pipeline.errors import MediaError
from pipeline.media import MediaInspector, ProbeCache, probe, sha256_file


@pytest.mark.parametrize(
    ("key", "duration_s", "codec"),
    [
        ("video_2s", 2.0, "h264"),
        ("video_webm", 1.2, "vp9"),
        ("video_mov", 1.0, "h264"),
        ("video_avi", 1.0, "mpeg4"),
    ],
)
def test_video_containers(media, key, duration_s, codec):
    info = probe(media[key])
    assert info.has_video and not info.has_audio
    assert info.duration_s == pytest.approx(duration_s, abs=0.05)
    assert (info.width, info.height, info.fps, info.video_codec) == (160, 96, 25.0, codec)


@pytest.mark.parametrize("key", ["audio_mp3", "audio_m4a", "audio_flac", "audio_ogg"])
def test_audio_containers(media, key):
    info = probe(media[key])
    assert info.has_audio and not info.has_video
    assert info.duration_s == pytest.approx(1.5, abs=0.06)


def test_a_30fps_video(media):
    info = probe(media["video_3s_30fps"])
    assert info.fps == 30.0 and info.duration_s == pytest.approx(3.0, abs=0.04)


@pytest.mark.parametrize("key", ["text_as_mp4", "truncated_mp4", "empty_wav"])
def test_unreadable_media_raises_media_error_naming_the_file(media, key):
    with pytest.raises(MediaError, match=media[key].name):
        probe(media[key])


def test_sha256_streams_in_small_chunks(tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        for i in range(40):
            out.write(bytes([i]) * (1024 * 1024))
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        digest = sha256_file(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected
    assert peak < 4 * 1024 * 1024  # a 40 MiB file hashed with a few MiB at most


def test_a_copy_under_a_new_name_reuses_the_probe(tmp_path, media):
    cache = ProbeCache(tmp_path / "cache.sqlite3")
    MediaInspector(cache).inspect(media["video_2s"])
    copy = tmp_path / "copy.mp4"
    shutil.copy(media["video_2s"], copy)
    inspector = MediaInspector(cache)
    sha, info = inspector.inspect(copy)
    assert (inspector.stats.hashed, inspector.stats.probed, inspector.stats.cache_hits) == (1, 0, 1)
    assert info.duration_s == pytest.approx(2.0)
    assert sha == sha256_file(media["video_2s"])


def test_the_cache_is_shared_between_instances_and_threads(tmp_path, media):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "cache.sqlite3"
    files = [media[k] for k in ("video_1s", "video_2s", "audio_mp3", "audio_flac")]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(MediaInspector(ProbeCache(path)).inspect, files))
    again = MediaInspector(ProbeCache(path))
    for f in files:
        again.inspect(f)
    assert again.stats.hashed == 0 and again.stats.probed == 0


def test_a_playlist_disguised_as_a_video_cannot_make_probing_call_out(tmp_path, media):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Count(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        evil = tmp_path / "evil.m3u8"  # FFmpeg only takes HLS from a .m3u8 name
        evil.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n"
            f"http://127.0.0.1:{server.server_port}/steal.ts\n#EXTINF:2.0,\n{media['video_2s']}\n#EXT-X-ENDLIST\n"
        )
        with pytest.raises(MediaError):
            probe(evil)
        assert hits == []
    finally:
        server.shutdown()
        server.server_close()


def test_urls_are_probed_over_http(sandbox, media):
    from tests.conftest import client_for

    url = client_for(sandbox).upload_media(media["video_2s"])
    info = probe(url, timeout_s=5)
    assert info.has_video and info.duration_s == pytest.approx(2.0)
