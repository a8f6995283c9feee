"""Planning real manifests over real files: every error class, all at once, and the estimate."""

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.errors import ManifestError
from pipeline.media import MediaInspector, ProbeCache
from pipeline.planning import plan_manifest
from pipeline.pricing import PriceModel
from pipeline.settings import MediaSettings
from pipeline.sync_modes import SyncMode


@pytest.fixture
def folder(tmp_path, media):
    """A manifest folder with media under names with spaces and non-ASCII letters."""
    clips = tmp_path / "clips ünïcode"
    clips.mkdir()
    for key, name in [
        ("video_1s", "épisode 1.mp4"),
        ("video_2s", "ep2.mp4"),
        ("video_webm", "ep3.webm"),
        ("audio_2_4s", "voix 1.wav"),
        ("audio_0_6s", "short.wav"),
        ("audio_mp3", "ep2.mp3"),
        ("text_as_mp4", "notes.mp4"),
        ("truncated_mp4", "truncated.mp4"),
        ("empty_wav", "empty.wav"),
        ("zero_duration_wav", "zero.wav"),
        ("audio_only_mp4", "audio-only.m4a"),
        ("video_huge", "huge.mp4"),
        ("audio_m4a", "voice.m4a"),
    ]:
        shutil.copy(media[key], clips / name)
    (clips / "a folder.wav").mkdir()
    return tmp_path


def plan(path: Path, **kw):
    kw.setdefault("media", MediaSettings())
    kw.setdefault("price", PriceModel())
    return plan_manifest(path, **kw)


def test_a_valid_manifest_is_priced_per_item_and_in_total(folder):
    manifest = folder / "catalog.csv"
    manifest.write_text(
        "id,video,audio,sync_mode,language\n"
        "ep1,clips ünïcode/épisode 1.mp4,clips ünïcode/voix 1.wav,loop,de\n"
        "ep2,clips ünïcode/ep2.mp4,clips ünïcode/ep2.mp3,,fr\n"
        "ep3,clips ünïcode/ep3.webm,clips ünïcode/voice.m4a,silence,es\n",
        encoding="utf-8-sig",
    )
    result = plan(manifest)
    assert [i.id for i in result.items] == ["ep1", "ep2", "ep3"]
    ep1, ep2, ep3 = result.items
    assert ep1.sync_mode is SyncMode.LOOP and ep1.expected_output_s == pytest.approx(2.4, abs=0.01)
    assert ep2.sync_mode is SyncMode.CUT_OFF and ep2.expected_output_s == pytest.approx(
        1.5, abs=0.05
    )
    assert ep3.expected_output_s == pytest.approx(1.5, abs=0.05)  # silence: max(1.2, 1.5)
    # Default price: input video seconds x $0.134
    assert ep1.price_usd == Decimal("0.134000")
    assert ep2.price_usd == Decimal("0.268000")
    assert result.total_usd == sum((i.price_usd for i in result.items), Decimal(0))
    assert ep1.metadata == {"language": "de"}
    assert len(ep1.video.sha256) == 64


def test_every_problem_is_reported_at_once_with_row_and_field(folder):
    c = "clips ünïcode"
    manifest = folder / "bad.csv"
    manifest.write_text(
        "id,video,audio,sync_mode,output\n"
        f"r1,{c}/missing.mp4,{c}/voix 1.wav,,\n"  # 1 file not found
        f"r2,{c},{c}/voix 1.wav,,\n"  # 2 a directory
        f"r3,{c}/notes.mp4,{c}/voix 1.wav,,\n"  # 3 not a media file
        f"r4,{c}/truncated.mp4,{c}/voix 1.wav,,\n"  # 4 truncated MP4
        f"r5,{c}/audio-only.m4a,{c}/voix 1.wav,,\n"  # 5 video without video stream
        f"r6,{c}/ep2.mp4,{c}/ep2.mp4,,\n"  # 6 audio without audio stream
        f"r7,{c}/ep2.mp4,{c}/zero.wav,,\n"  # 7 zero duration
        f"r8,{c}/ep2.mp4,{c}/empty.wav,,\n"  # 8 zero bytes
        f"r9,{c}/huge.mp4,{c}/voix 1.wav,,\n"  # 9 over resolution
        f"r10,{c}/ep2.mp4,{c}/a folder.wav,wobble,../../x.mp4\n"  # 10 dir, sync_mode, output
        f"r10,ftp://host/a.mp4,file:///etc/passwd,,\n"  # 11 duplicate id, schemes
        f"r12,{c}/ep2.mp4,{c}/ep2.mp3,,\n",  # 12 fine
        encoding="utf-8",
    )
    with pytest.raises(ManifestError) as caught:
        plan(manifest)
    problems = caught.value.problems
    found = {(p.row, p.field) for p in problems}
    assert found == {
        (1, "video"),
        (2, "video"),
        (3, "video"),
        (4, "video"),
        (5, "video"),
        (6, "audio"),
        (7, "audio"),
        (8, "audio"),
        (9, "video"),
        (10, "audio"),
        (10, "sync_mode"),
        (10, "output"),
        (11, "id"),
        (11, "video"),
        (11, "audio"),
    }
    text = {(p.row, p.field): f"{p.message} {p.hint}" for p in problems}
    assert "file not found" in text[(1, "video")]
    assert "is a directory" in text[(2, "video")]
    assert "not a media file" in text[(3, "video")] and "not a media file" in text[(4, "video")]
    assert "no video stream" in text[(5, "video")]
    assert "no audio stream" in text[(6, "audio")]
    assert "zero duration" in text[(7, "audio")]
    assert "empty (0 bytes)" in text[(8, "audio")]
    assert "4128x2176, over the 4096x2160 limit" in text[(9, "video")]
    assert "escape" in text[(10, "output")]
    assert "duplicate id 'r10'" in text[(11, "id")]
    assert "ftp://" in text[(11, "video")] and "file://" in text[(11, "audio")]
    # Every problem names its line in the file too
    assert all(p.line == p.row + 1 for p in problems)


def test_limits_are_configurable(folder):
    c = "clips ünïcode"
    manifest = folder / "m.jsonl"
    manifest.write_text(
        f'{{"video": "{c}/ep2.mp4", "audio": "{c}/voix 1.wav"}}\n', encoding="utf-8"
    )
    with pytest.raises(ManifestError) as caught:
        plan(manifest, media=MediaSettings(max_duration_s=2.2, max_file_size_mb=1))
    messages = " ".join(str(p) for p in caught.value.problems)
    assert "over the 2 s limit" in messages  # the 2.4 s audio
    plan(manifest, media=MediaSettings(max_duration_s=3))


def test_file_size_limit(folder, tmp_path):
    big = folder / "big.mp4"
    big.write_bytes(b"\0" * (1024 * 1024 + 1))
    manifest = folder / "m.yaml"
    manifest.write_text("- video: big.mp4\n  audio: clips ünïcode/voix 1.wav\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="over the 1 MB limit"):
        plan(manifest, media=MediaSettings(max_file_size_mb=1))


def test_sync_mode_override_and_default(folder):
    c = "clips ünïcode"
    manifest = folder / "m.json"
    manifest.write_text(
        f'[{{"video": "{c}/ep2.mp4", "audio": "{c}/voix 1.wav", "sync_mode": "loop"}}]',
        encoding="utf-8",
    )
    assert plan(manifest).items[0].sync_mode is SyncMode.LOOP
    assert plan(manifest, sync_mode_override=SyncMode.REMAP).items[0].sync_mode is SyncMode.REMAP


def test_replanning_uses_the_cache_and_notices_changes(folder, tmp_path):
    c = "clips ünïcode"
    manifest = folder / "m.csv"
    manifest.write_text(
        f"video,audio\n{c}/ep2.mp4,{c}/voix 1.wav\n{c}/épisode 1.mp4,{c}/voix 1.wav\n",
        encoding="utf-8",
    )
    cache = ProbeCache(tmp_path / "cache.sqlite3")
    first = MediaInspector(cache)
    plan(manifest, inspector=first)
    assert (first.stats.hashed, first.stats.probed) == (3, 3)
    second = MediaInspector(cache)
    again = plan(manifest, inspector=second)
    assert (second.stats.hashed, second.stats.probed, second.stats.cache_hits) == (0, 0, 3)
    # Given one file replaced by different content, only that one is read again
    shutil.copy(folder / c / "ep3.webm", folder / c / "ep2.mp4")
    third = MediaInspector(cache)
    changed = plan(manifest, inspector=third)
    assert (third.stats.hashed, third.stats.probed) == (1, 1)
    assert changed.items[0].video.sha256 != again.items[0].video.sha256


def test_progress_is_reported_once_per_distinct_input(folder):
    c = "clips ünïcode"
    manifest = folder / "m.csv"
    # Three rows, five distinct files: the audio the first two share is checked once
    manifest.write_text(
        f"video,audio,sync_mode\n{c}/ep2.mp4,{c}/voix 1.wav,loop\n{c}/épisode 1.mp4,{c}/voix 1.wav,loop\n"
        f"{c}/ep3.webm,{c}/ep2.mp3,loop\n",
        encoding="utf-8",
    )
    calls = []
    plan(manifest, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
