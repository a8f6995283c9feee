"""The sync_mode table of contract.md, as pure functions."""

import pytest

from pipeline.sync_modes import (
    SyncMode,
    expected_output_s,
    output_frame_count,
    source_time_s,
    within_one_frame,
)

# (mode, video_s, audio_s, expected output) for audio longer, then video longer.
TABLE = [
    (SyncMode.CUT_OFF, 10.0, 12.0, 10.0),
    (SyncMode.CUT_OFF, 12.0, 10.0, 10.0),
    (SyncMode.LOOP, 10.0, 12.0, 12.0),
    (SyncMode.LOOP, 12.0, 10.0, 10.0),
    (SyncMode.BOUNCE, 10.0, 12.0, 12.0),
    (SyncMode.BOUNCE, 12.0, 10.0, 10.0),
    (SyncMode.SILENCE, 10.0, 12.0, 12.0),
    (SyncMode.SILENCE, 12.0, 10.0, 12.0),
    (SyncMode.REMAP, 10.0, 12.0, 12.0),
    (SyncMode.REMAP, 12.0, 10.0, 10.0),
]


@pytest.mark.parametrize(("mode", "video_s", "audio_s", "expected"), TABLE)
def test_expected_output_follows_the_contract_table(mode, video_s, audio_s, expected):
    assert expected_output_s(mode, video_s, audio_s) == expected


def test_negative_durations_are_refused():
    with pytest.raises(ValueError, match="durations"):
        expected_output_s(SyncMode.LOOP, -1.0, 2.0)


def test_output_frames_land_on_the_25fps_grid():
    assert output_frame_count(SyncMode.LOOP, 1.0, 2.4) == 60
    assert output_frame_count(SyncMode.CUT_OFF, 0.001, 5.0) == 1  # never zero frames


def test_loop_restarts_the_video_and_bounce_plays_it_backward():
    # Given a 1 s video and 3 s of audio
    assert source_time_s(SyncMode.LOOP, 1.25, 1.0, 3.0) == pytest.approx(0.25)
    assert source_time_s(SyncMode.BOUNCE, 1.25, 1.0, 3.0) == pytest.approx(0.75)
    assert source_time_s(SyncMode.BOUNCE, 2.25, 1.0, 3.0) == pytest.approx(0.25)


def test_silence_holds_the_last_frame_and_remap_retimes():
    assert source_time_s(SyncMode.SILENCE, 2.5, 1.0, 3.0) == 1.0
    assert source_time_s(SyncMode.REMAP, 1.5, 1.0, 3.0) == pytest.approx(0.5)
    assert source_time_s(SyncMode.REMAP, 1.5, 6.0, 3.0) == pytest.approx(3.0)


def test_one_frame_of_tolerance():
    assert within_one_frame(2.04, 2.0)
    assert not within_one_frame(2.05, 2.0)


def test_half_frames_round_up():
    assert output_frame_count(SyncMode.LOOP, 1.0, 2.5) == 63  # 62.5 frames
