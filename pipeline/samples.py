"""Generated sample media: never downloaded, always reproducible.

Each video frame carries its own index as a 10-bit code in vertical bands (white = 1), big
enough to survive lossy encoding, so a test can decode any output and tell which input frame
it shows. `read_frame_codes` reads them back. Audio is a sine tone, optionally silent.
Used by the tests, the benchmarks, the sandbox's self-check and the demo.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.sync_modes import frames_in

CODE_BITS = 10
"""Frame indexes up to 1023 are encoded; higher indexes wrap."""

_VIDEO_CODECS = {
    ".mp4": "libx264",
    ".mov": "libx264",
    ".m4v": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
}
_AUDIO_CODECS = {
    ".wav": ("pcm_s16le", "s16"),
    ".mp3": ("libmp3lame", "s16p"),
    ".m4a": ("aac", "fltp"),
    ".aac": ("aac", "fltp"),
    ".flac": ("flac", "s16"),
    ".ogg": ("libopus", "flt"),
    ".opus": ("libopus", "flt"),
}


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame (height x width x 3, uint8) showing `index` as CODE_BITS bands."""
    image = np.full((height, width, 3), 24, dtype=np.uint8)
    band = width // CODE_BITS
    for bit in range(CODE_BITS):
        if (index >> bit) & 1:
            image[:, bit * band : (bit + 1) * band, :] = 232
    return image


def decode_code(rgb: np.ndarray) -> int:
    """Read the band code back from a decoded RGB frame (inverse of `frame_pixels`)."""
    height, width, _ = rgb.shape
    band = width // CODE_BITS
    margin_x, margin_y = max(band // 4, 1), height // 4
    value = 0
    for bit in range(CODE_BITS):
        patch = rgb[
            margin_y : height - margin_y, bit * band + margin_x : (bit + 1) * band - margin_x
        ]
        if float(patch.mean()) > 128:
            value |= 1 << bit
    return value


def write_video(
    path: Path,
    duration_s: float,
    *,
    fps: int = 25,
    width: int = 160,
    height: int = 96,
    audio_s: float | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a coded video of `duration_s` seconds; with `audio_s`, also a tone track."""
    codec = _VIDEO_CODECS.get(path.suffix.lower(), "libx264")
    frames = frames_in(duration_s, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        if metadata:
            container.metadata.update(metadata)
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        audio_stream: Any = None
        if audio_s is not None:
            audio_stream = container.add_stream("aac", rate=44_100)
            audio_stream.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, width, height), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None and audio_s is not None:
            _encode_tone(container, audio_stream, audio_s, "fltp", 44_100)
    return path


def write_audio(
    path: Path, duration_s: float, *, sample_rate: int = 16_000, frequency_hz: float = 440.0
) -> Path:
    """Write a mono tone of `duration_s` seconds in the format the extension names."""
    codec, sample_format = _AUDIO_CODECS.get(path.suffix.lower(), ("pcm_s16le", "s16"))
    if codec == "libopus":
        sample_rate = 48_000
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream: Any = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        _encode_tone(container, stream, duration_s, sample_format, sample_rate, frequency_hz)
    return path


def _encode_tone(
    container: Any,
    stream: Any,
    duration_s: float,
    sample_format: str,
    sample_rate: int,
    frequency_hz: float = 440.0,
) -> None:
    total = round(duration_s * sample_rate)
    chunk = 1024
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        t = (np.arange(start, start + count) / sample_rate).astype(np.float64)
        wave = 0.3 * np.sin(2 * math.pi * frequency_hz * t)
        samples: np.ndarray
        if sample_format.startswith("s16"):
            samples = (wave * 32767).astype(np.int16).reshape(1, -1)
        else:
            samples = wave.astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def read_frame_codes(path: Path) -> list[int]:
    """The code of every frame of a video, in presentation order."""
    codes = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            codes.append(decode_code(frame.to_ndarray(format="rgb24")))
    return codes


def audio_peak(path: Path, start_s: float, end_s: float) -> float:
    """Peak absolute sample value (0..1) of the first audio stream between two instants."""
    peak = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if frame.pts is None or frame.time_base is None:
                continue
            t0 = float(frame.pts * frame.time_base)
            samples = frame.to_ndarray().astype(np.float64)
            if samples.dtype.kind == "i" or np.abs(samples).max(initial=0) > 1.5:
                samples = samples / 32768.0
            times = t0 + np.arange(samples.shape[-1]) / frame.sample_rate
            mask = (times >= start_s) & (times < end_s)
            if mask.any():
                peak = max(peak, float(np.abs(samples[..., mask]).max()))
    return peak


SAMPLE_ITEMS: tuple[tuple[str, float, float, str, str], ...] = (
    # (id, video seconds, audio seconds, sync_mode, language)
    ("intro", 3.0, 4.2, "loop", "de"),
    ("interview", 4.0, 2.6, "cut_off", "fr"),
    ("product", 2.0, 3.4, "bounce", "es"),
    ("outro", 2.5, 3.5, "silence", "it"),
    ("teaser", 3.0, 2.0, "remap", "ja"),
)


def write_sample_catalog(folder: Path, *, with_failure: bool = True) -> Path:
    """Write sample media and a `catalog.csv` covering all five sync modes; returns the CSV.

    With `with_failure`, one more row uses a video the sandbox treats as faceless, so a
    batch shows what a failed item looks like.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["id,video,audio,sync_mode,language,title"]
    for item_id, video_s, audio_s, mode, language in SAMPLE_ITEMS:
        write_video(folder / "video" / f"{item_id}.mp4", video_s, width=320, height=192)
        write_audio(folder / "audio" / f"{item_id}-{language}.wav", audio_s)
        rows.append(
            f"{item_id},video/{item_id}.mp4,audio/{item_id}-{language}.wav,{mode},{language},{item_id.title()}"
        )
    if with_failure:
        write_video(
            folder / "video" / "b-roll.mp4",
            2.0,
            width=320,
            height=192,
            metadata={"comment": "lipdub:no-face"},
        )
        write_audio(folder / "audio" / "b-roll-de.wav", 2.0)
        rows.append("b-roll,video/b-roll.mp4,audio/b-roll-de.wav,cut_off,de,B-roll without a face")
    manifest = folder / "catalog.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest
