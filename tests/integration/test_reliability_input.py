"""Hostile input, generated here: every bad row gets a clear, row-numbered error, the whole
batch is refused before anything is paid or uploaded, and hostile metadata is only text.
Through the real entry point (`lipdub plan`, `lipdub run`) against a live stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.samples import write_audio, write_video
from tests.integration.stack import Stack, audit

pytestmark = pytest.mark.slow

SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil.example","click")'


def hostile_catalog(folder: Path) -> tuple[Path, dict[tuple[int, str], str]]:
    """A manifest with one hostile case per row; the (row, field) each must be refused on,
    with a word its message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "ok.mp4", 1.0, width=96, height=64)
    write_audio(folder / "ok.wav", 1.0)
    (folder / "notes.mp4").write_text("a text file with a media extension\n")
    whole = write_video(folder / "whole.mp4", 2.0, width=96, height=64).read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) // 3])
    (folder / "empty.wav").write_bytes(b"")
    write_audio(folder / "endless.wav", 700.0, sample_rate=8_000)  # over the 600 s limit
    rows = [
        f'ok,ok.mp4,ok.wav,loop,"{SCRIPT}","{FORMULA.replace(chr(34), chr(34) * 2)}",',
        "r2,notes.mp4,ok.wav,,,,",
        "r3,cut.mp4,ok.wav,,,,",
        "r4,ok.mp4,empty.wav,,,,",
        "r5,ok.mp4,endless.wav,,,,",
        "r6,ok.mp4,ok.wav,wobble,,,",
        "r7,file:///etc/passwd,ok.wav,,,,",
        "r8,ok.mp4,ftp://example.com/voice.wav,,,,",
        "r9,ok.mp4,ok.wav,,,,../../../etc/cron.d/x.mp4",
        "ok,ok.mp4,ok.wav,bounce,,,",
        "r11,ok.mp4,ok.wav,,,,,surplus",
    ]
    manifest = folder / "hostile.csv"
    manifest.write_text(
        "id,video,audio,sync_mode,title,note,output\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    expected = {
        (2, "video"): "not a media file",
        (3, "video"): "not a media file",
        (4, "audio"): "empty",
        (5, "audio"): "600 s limit",
        (6, "sync_mode"): "wobble",
        (7, "video"): "file://",
        (8, "audio"): "ftp://",
        (9, "output"): "escape",
        (10, "id"): "duplicate",
        (10, "output"): "ok.mp4",  # and its output is row 1's
        (11, None): "cells",
    }
    return manifest, expected


def test_every_hostile_row_is_named_and_nothing_is_spent(
    cli, stack: Stack, sandbox_server, tmp_path
):
    manifest, expected = hostile_catalog(tmp_path / "catalog")
    # When the manifest is planned, then run
    planned = cli("plan", str(manifest), "--json")
    run = cli("run", str(manifest), "--yes")
    # Then each hostile row is refused on its field, with a message that says what is wrong
    assert planned.returncode == 1, planned.stderr
    problems = json.loads(planned.stdout)["problems"]
    found = {(p["row"], p["field"]): f"{p['message']} {p['hint']}" for p in problems}
    assert set(found) == set(expected), found
    for where, word in expected.items():
        assert word in found[where], (where, found[where])
        assert found[where].strip().endswith((".", ")")), "every problem says what to do"
    # And the run is refused before anything is uploaded, submitted or recorded
    assert run.returncode == 1 and "row 2 (line 3), field 'video'" in run.stderr, run.stderr
    assert audit(sandbox_server.url) == []
    assert stack.keys("") == []
    assert stack.control.ledger.batch_ids() == []
    # And the metadata payloads were never the problem: row 1 is valid
    assert not any(row == 1 for row, _ in found)


@pytest.mark.parametrize(
    ("name", "content", "word"),
    [
        ("latin1.csv", "id,video,audio\né,ok.mp4,ok.wav\n".encode("latin-1"), "UTF-8"),
        ("utf16.csv", "id,video,audio\nx,ok.mp4,ok.wav\n".encode("utf-16"), "UTF-8"),
        ("columns.csv", b"id,video,voice\nx,ok.mp4,ok.wav\n", "audio"),
        ("binary.csv", bytes(range(256)) * 4, "UTF-8"),
    ],
)
def test_a_broken_file_is_refused_whole_with_what_to_do(
    cli, stack, sandbox_server, tmp_path, name, content, word
):
    (tmp_path / name).write_bytes(content)
    result = cli("run", str(tmp_path / name), "--yes")
    assert result.returncode == 1, result.stderr
    assert word in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert audit(sandbox_server.url) == []
