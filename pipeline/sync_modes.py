"""The five sync modes of lipsync-3 and the output duration each one produces.

V is the video duration, A the audio duration, both in seconds (contract.md):

    mode      A > V (audio longer)               V > A (video longer)      output
    cut_off   audio clipped to the video          video trimmed to audio    min(V, A)
    loop      video restarts until audio ends     video trimmed             A
    bounce    video forward, backward, repeated   video trimmed             A
    silence   last frame held to the audio's end  audio padded w/ silence   max(V, A)
    remap     video slowed down to A              video sped up to A        A

Outputs land on the 25 fps frame grid, so checks allow one frame of tolerance.
"""

from __future__ import annotations

import math
from enum import StrEnum

OUTPUT_FPS = 25
"""The provider's output frame rate; Sync Labs bills output frames at this rate."""

FRAME_TOLERANCE_S = 1 / OUTPUT_FPS
"""How far an output duration may be from the expected one: one output frame."""


class SyncMode(StrEnum):
    """How lipsync-3 reconciles a video and an audio of different lengths."""

    BOUNCE = "bounce"
    LOOP = "loop"
    CUT_OFF = "cut_off"
    SILENCE = "silence"
    REMAP = "remap"


DEFAULT_SYNC_MODE = SyncMode.CUT_OFF
ALLOWED_SYNC_MODES: tuple[str, ...] = tuple(sorted(m.value for m in SyncMode))


def expected_output_s(mode: SyncMode, video_s: float, audio_s: float) -> float:
    """Seconds of output lipsync-3 produces for these input durations (before frame rounding).

    >>> expected_output_s(SyncMode.CUT_OFF, video_s=10.0, audio_s=12.0)
    10.0
    """
    if video_s < 0 or audio_s < 0:
        raise ValueError(f"durations must be >= 0, got video_s={video_s}, audio_s={audio_s}")
    if mode is SyncMode.CUT_OFF:
        return min(video_s, audio_s)
    if mode is SyncMode.SILENCE:
        return max(video_s, audio_s)
    # loop, bounce and remap all follow the audio.
    return audio_s


def frames_in(seconds: float, fps: float) -> int:
    """Whole frames in `seconds` at `fps`, rounded half up (never below 1).

    >>> frames_in(2.5, 25)
    63
    """
    return max(1, math.floor(seconds * fps + 0.5))


def output_frame_count(mode: SyncMode, video_s: float, audio_s: float) -> int:
    """Output frames at OUTPUT_FPS: the expected duration rounded half up to a frame (>= 1).

    >>> output_frame_count(SyncMode.LOOP, video_s=1.0, audio_s=2.0)
    50
    """
    return frames_in(expected_output_s(mode, video_s, audio_s), OUTPUT_FPS)


def source_time_s(mode: SyncMode, out_t_s: float, video_s: float, audio_s: float) -> float:
    """The instant of the input video shown at output time `out_t_s` (seconds).

    This is what each mode means for the picture; the sandbox renders with it and the tests
    check rendered frame order against it.

    >>> source_time_s(SyncMode.BOUNCE, out_t_s=1.5, video_s=1.0, audio_s=3.0)
    0.5
    """
    if video_s <= 0:
        return 0.0
    if mode is SyncMode.REMAP:
        return out_t_s * video_s / audio_s if audio_s > 0 else 0.0
    if out_t_s < video_s:
        return out_t_s
    # Past the end of the video: only reached when the output outlasts the video.
    if mode is SyncMode.LOOP:
        return math.fmod(out_t_s, video_s)
    if mode is SyncMode.BOUNCE:
        phase = math.fmod(out_t_s, 2 * video_s)
        return phase if phase < video_s else 2 * video_s - phase
    # cut_off never gets here (output <= video); silence holds the last frame.
    return video_s


def within_one_frame(actual_s: float, expected_s: float) -> bool:
    """True when an output duration is within one output frame of the expected one."""
    return abs(actual_s - expected_s) <= FRAME_TOLERANCE_S + 1e-6
