"""Render what lipsync-3 would return for a sync_mode: the right frames, the right length,
the new audio muxed in, at 25 fps in an MP4 (H.264 + AAC).

The picture follows `pipeline.sync_modes.source_time_s` (looped, played backward, held or
re-timed); the audio is the new track, clipped (cut_off) or padded with silence (silence).
Frames are held in memory as YUV 4:2:0 (bounce plays them backward), so inputs are scaled
down to `max_width`, and further when needed to keep every frame within `memory_budget_mb`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from pipeline.errors import MediaError
from pipeline.sync_modes import OUTPUT_FPS, SyncMode, output_frame_count, source_time_s

AUDIO_RATE_HZ = 44_100
AUDIO_CHUNK = 1024


@dataclass(frozen=True)
class RenderResult:
    """What was written: output duration and frame count, and the inputs' durations."""

    output_s: float
    frames: int
    video_s: float
    audio_s: float


def _even(value: int) -> int:
    return max(2, value - value % 2)


def frame_size_for_budget(
    width: int, height: int, frames: int, *, max_width: int, memory_budget_mb: float
) -> tuple[int, int]:
    """The (even) frame size that fits `frames` YUV 4:2:0 frames in the memory budget.

    >>> frame_size_for_budget(1920, 1080, 250, max_width=640, memory_budget_mb=512)
    (640, 360)
    """
    scale = min(1.0, max_width / width)
    per_frame_bytes = memory_budget_mb * 1024 * 1024 / max(frames, 1)
    needed_bytes = width * height * scale * scale * 1.5
    if needed_bytes > per_frame_bytes:
        scale *= (per_frame_bytes / needed_bytes) ** 0.5
    return _even(max(16, int(width * scale))), _even(max(16, int(height * scale)))


def _read_video(
    path: Path, max_width: int, memory_budget_mb: float
) -> tuple[list[float], list[np.ndarray], float, int, int]:
    """(frame times, frames as yuv420p arrays, video seconds, width, height)."""
    times: list[float] = []
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError("the video input has no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or OUTPUT_FPS)
        seconds = float(container.duration or 0) / av.time_base or 60.0
        width, height = frame_size_for_budget(
            stream.codec_context.width,
            stream.codec_context.height,
            int(seconds * rate) + 1,
            max_width=max_width,
            memory_budget_mb=memory_budget_mb,
        )
        last_duration = 0.0
        for frame in container.decode(stream):
            t = (
                float(frame.pts * frame.time_base)
                if frame.pts is not None and frame.time_base is not None
                else len(times) / OUTPUT_FPS
            )
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            times.append(t)
            frames.append(scaled.to_ndarray())
            if frame.duration and frame.time_base:
                last_duration = float(frame.duration * frame.time_base)
    if not frames:
        raise MediaError("the video input has no decodable frames")
    order = sorted(range(len(times)), key=times.__getitem__)
    times = [times[i] - times[order[0]] for i in order]
    frames = [frames[i] for i in order]
    if last_duration <= 0:
        last_duration = (times[-1] / (len(times) - 1)) if len(times) > 1 else 1 / OUTPUT_FPS
    return times, frames, times[-1] + last_duration, width, height


def _read_audio(path: Path) -> np.ndarray:
    """The first audio stream as float32 stereo at AUDIO_RATE_HZ, shape (2, samples)."""
    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE_HZ)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError("the audio input has no audio stream")
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise MediaError("the audio input has no decodable samples")
    return np.concatenate(chunks, axis=1).astype(np.float32)


def fit_audio(samples: np.ndarray, total: int) -> np.ndarray:
    """Clip or pad (with silence) a (channels, n) array to exactly `total` samples."""
    if samples.shape[1] >= total:
        return samples[:, :total]
    pad = np.zeros((samples.shape[0], total - samples.shape[1]), dtype=samples.dtype)
    return np.concatenate([samples, pad], axis=1)


def render(
    video_path: Path,
    audio_path: Path,
    mode: SyncMode,
    out_path: Path,
    *,
    max_width: int = 640,
    memory_budget_mb: float = 512,
) -> RenderResult:
    """Write the lip-synced stand-in for (video, audio, mode) to `out_path` (an .mp4)."""
    try:
        times, frames, video_s, width, height = _read_video(video_path, max_width, memory_budget_mb)
        audio = _read_audio(audio_path)
    except av.error.FFmpegError as err:
        raise MediaError(f"an input could not be decoded ({err})") from err
    audio_s = audio.shape[1] / AUDIO_RATE_HZ
    count = output_frame_count(mode, video_s, audio_s)
    output_s = count / OUTPUT_FPS
    # The audio ends a little before the last frame does: AAC's priming and padding must
    # not make the file longer than the picture.
    audio_total = max(AUDIO_CHUNK, round(output_s * AUDIO_RATE_HZ) - 2 * AUDIO_CHUNK)
    track = fit_audio(audio, audio_total)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_path), mode="w", format="mp4") as container:
        video_stream: Any = container.add_stream("libx264", rate=OUTPUT_FPS)
        video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
        video_stream.options = {"preset": "ultrafast", "crf": "20"}
        audio_stream: Any = container.add_stream("aac", rate=AUDIO_RATE_HZ)
        audio_stream.layout = "stereo"
        for k in range(count):
            source_s = source_time_s(mode, k / OUTPUT_FPS, video_s, audio_s)
            index = min(max(bisect.bisect_right(times, source_s + 1e-6) - 1, 0), len(frames) - 1)
            frame = av.VideoFrame.from_ndarray(frames[index], format="yuv420p")
            frame.pts = k
            frame.time_base = Fraction(1, OUTPUT_FPS)
            container.mux(video_stream.encode(frame))
        container.mux(video_stream.encode(None))
        for start in range(0, audio_total, AUDIO_CHUNK):
            block = np.ascontiguousarray(track[:, start : start + AUDIO_CHUNK])
            aframe = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            aframe.sample_rate = AUDIO_RATE_HZ
            aframe.pts = start
            aframe.time_base = Fraction(1, AUDIO_RATE_HZ)
            container.mux(audio_stream.encode(aframe))
        container.mux(audio_stream.encode(None))
    return RenderResult(output_s=output_s, frames=count, video_s=video_s, audio_s=audio_s)
