"""Every sync_mode, audio longer and video longer, rendered by the sandbox over HTTP.

The inputs carry their frame index as a visible code, so the output's frame order is read
back from the pictures and checked against what each mode means (not against our code).
"""

from itertools import pairwise

import pytest

from pipeline.media import probe
from pipeline.samples import audio_peak, read_frame_codes
from pipeline.sync_modes import within_one_frame
from tests.conftest import client_for, download, run_job

VIDEO_FRAMES = 25  # video_1s: frames 0..24 at 25 fps


def render_through_sandbox(sandbox, media, tmp_path, video, audio, mode):
    done = run_job(client_for(sandbox), media[video], media[audio], mode)
    assert done.status == "completed", done.error
    return download(done.outputs[0], tmp_path / f"{mode}.mp4")


# Audio longer: 1 s video, 2.4 s audio. Video longer: 1 s video, 0.6 s audio.
CASES = [
    ("cut_off", "audio_2_4s", 1.0),
    ("cut_off", "audio_0_6s", 0.6),
    ("loop", "audio_2_4s", 2.4),
    ("loop", "audio_0_6s", 0.6),
    ("bounce", "audio_2_4s", 2.4),
    ("bounce", "audio_0_6s", 0.6),
    ("silence", "audio_2_4s", 2.4),
    ("silence", "audio_0_6s", 1.0),
    ("remap", "audio_2_4s", 2.4),
    ("remap", "audio_0_6s", 0.6),
]


@pytest.mark.parametrize(("mode", "audio", "expected_s"), CASES)
def test_output_duration_is_within_one_frame(sandbox, media, tmp_path, mode, audio, expected_s):
    output = render_through_sandbox(sandbox, media, tmp_path, "video_1s", audio, mode)
    info = probe(output)
    assert info.has_video and info.has_audio
    assert within_one_frame(info.duration_s, expected_s), info.duration_s
    assert abs(len(read_frame_codes(output)) - expected_s * 25) <= 1


def test_cut_off_with_longer_audio_trims_the_audio_to_the_video(sandbox, media, tmp_path):
    codes = read_frame_codes(
        render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_2_4s", "cut_off")
    )
    assert codes == list(range(VIDEO_FRAMES))


def test_modes_trim_a_longer_video_to_the_audio(sandbox, media, tmp_path):
    for mode in ("cut_off", "loop", "bounce"):
        codes = read_frame_codes(
            render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_0_6s", mode)
        )
        assert codes == list(range(15)), mode


def test_loop_restarts_from_the_first_frame(sandbox, media, tmp_path):
    codes = read_frame_codes(
        render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_2_4s", "loop")
    )
    assert codes == list(range(25)) + list(range(25)) + list(range(10))


def test_bounce_plays_forward_then_backward(sandbox, media, tmp_path):
    codes = read_frame_codes(
        render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_2_4s", "bounce")
    )
    assert codes[:25] == list(range(25))
    backward = codes[25:50]
    assert all(a >= b for a, b in pairwise(backward))  # never forward
    assert backward[0] >= 23 and backward[-1] <= 1  # from the end back to the start
    forward_again = codes[50:]
    assert all(a <= b for a, b in pairwise(forward_again))


def test_silence_holds_the_last_frame_and_pads_the_audio(sandbox, media, tmp_path):
    held = render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_2_4s", "silence")
    codes = read_frame_codes(held)
    assert codes[:25] == list(range(25)) and set(codes[25:]) == {24}
    padded = render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_0_6s", "silence")
    assert read_frame_codes(padded) == list(range(25))
    assert audio_peak(padded, 0.1, 0.5) > 0.2  # the voice
    assert audio_peak(padded, 0.7, 0.9) < 0.01  # silence after the 0.6 s of audio


def test_remap_slows_down_or_speeds_up_the_whole_video(sandbox, media, tmp_path):
    slow = read_frame_codes(
        render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_2_4s", "remap")
    )
    assert slow[0] == 0 and slow[-1] >= 23 and sorted(slow) == slow
    assert len(set(slow)) >= 24  # every frame shown, each about 2.4 times
    fast = read_frame_codes(
        render_through_sandbox(sandbox, media, tmp_path, "video_1s", "audio_0_6s", "remap")
    )
    assert fast[0] == 0 and fast[-1] >= 22 and sorted(fast) == fast and len(fast) == 15


def test_a_30fps_video_is_resampled_to_25fps(sandbox, media, tmp_path):
    output = render_through_sandbox(
        sandbox, media, tmp_path, "video_3s_30fps", "audio_2_4s", "cut_off"
    )
    info = probe(output)
    assert info.fps == 25.0 and within_one_frame(info.duration_s, 2.4)
    codes = read_frame_codes(output)
    assert codes[0] == 0 and codes[-1] in (70, 71) and sorted(codes) == codes
