"""Media facts: probe with PyAV, hash by streaming, and cache both by content.

Re-planning a catalog must not re-read it: `MediaInspector` remembers, in a small SQLite
file, each file's sha256 by (path, size, mtime, inode), and each probe result by sha256. A
file that changed gets a new stat, so it is hashed and probed again; a copy of a known file
under a new name is hashed once and then reuses the probe.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import av.error

from pipeline.errors import MediaError

HASH_CHUNK_BYTES = 1024 * 1024
PROBE_CACHE_VERSION = 1
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".m4v", ".mkv"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".ogg", ".flac", ".m4a", ".aac", ".opus"})


@dataclass(frozen=True)
class MediaInfo:
    """What a probe found in one media file. Durations in seconds, sizes in pixels/bytes."""

    duration_s: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    container: str = ""
    size_bytes: int | None = None

    def to_json(self) -> str:
        """Serialise for the cache."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MediaInfo:
        """Inverse of `to_json`."""
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks: memory stays flat whatever the size."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as err:
        raise MediaError(f"cannot read {path.name}: {err.strerror or err}") from err
    return digest.hexdigest()


LOCAL_PROTOCOLS = "file"
URL_PROTOCOLS = "http,https,tcp,tls"
ALLOWED_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,wav,mp3,ogg,flac,aac"
"""The containers lipsync-3 takes (contract.md). Playlists (hls, concat...) are never opened."""


def probe(source: str | Path, *, timeout_s: float | None = None) -> MediaInfo:
    """Open a file (or URL) with PyAV and read its streams and duration, without decoding.

    FFmpeg picks a demuxer by content, so a "video" may really be a playlist naming other
    files or URLs. Only the media containers lipsync-3 takes may be opened, and only `file`
    for a local path, only http(s) for a URL: a hostile manifest cannot make planning read
    other files or call out.

    Raises MediaError when it is not a media file FFmpeg can read.
    """
    is_path = isinstance(source, Path)
    options = {
        "protocol_whitelist": LOCAL_PROTOCOLS if is_path else URL_PROTOCOLS,
        "format_whitelist": ALLOWED_DEMUXERS,
    }
    if timeout_s:
        options["timeout"] = str(int(timeout_s * 1_000_000))
    name = Path(str(source)).name if is_path else shown_url(str(source))
    try:
        with av.open(str(source), mode="r", options=options) as container:
            return _describe(container, source)
    except av.error.FFmpegError as err:
        raise MediaError(f"{name} is not a readable media file ({_ffmpeg_reason(err)})") from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MediaError(f"{name} cannot be opened as media ({err})") from err


def _ffmpeg_reason(err: av.error.FFmpegError) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).split(":")[0].strip() or type(err).__name__


def _describe(container: Any, source: str | Path) -> MediaInfo:
    video = next(iter(container.streams.video), None)
    audio = next(iter(container.streams.audio), None)
    duration_s = _duration_s(container, video, audio)
    fps: float | None = None
    if video is not None:
        rate = video.average_rate or video.guessed_rate or video.base_rate
        fps = float(rate) if rate else None
    size = Path(source).stat().st_size if isinstance(source, Path) else None
    return MediaInfo(
        duration_s=duration_s,
        has_video=video is not None,
        has_audio=audio is not None,
        width=int(video.codec_context.width) if video is not None else None,
        height=int(video.codec_context.height) if video is not None else None,
        fps=fps,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        container=str(container.format.name),
        size_bytes=size,
    )


def _duration_s(container: Any, video: Any, audio: Any) -> float:
    """Container duration when the header has one, else the streams', else the last packet."""
    if container.duration:
        return float(container.duration) / av.time_base
    best = 0.0
    for stream in (video, audio):
        if stream is not None and stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    if best > 0:
        return best
    # No duration in any header (some WebM/streamed files): walk the packets, no decoding.
    end = 0.0
    for packet in container.demux():
        if packet.pts is None or packet.time_base is None:
            continue
        tb = Fraction(packet.time_base)
        end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
    return end


class ProbeCache:
    """SQLite memory of file digests (by stat) and probe results (by digest).

    Safe across threads and processes (WAL, one connection per thread).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER,"
                " mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS probes (sha256 TEXT, version INTEGER,"
                " info TEXT, PRIMARY KEY (sha256, version))"
            )

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30)
            # WAL + NORMAL: durable across crashes of this process, no fsync per remembered
            # row (losing the last rows to a power cut only costs a re-probe).
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def digest(self, path: Path) -> str | None:
        """The remembered sha256 of `path`, if the file has not changed since."""
        st = path.stat()
        row = (
            self._connect()
            .execute(
                "SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
                (str(path), st.st_size, st.st_mtime_ns, st.st_ino),
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    def remember_digest(self, path: Path, sha256: str) -> None:
        """Remember `path`'s digest under its current stat."""
        st = path.stat()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                (str(path), st.st_size, st.st_mtime_ns, st.st_ino, sha256),
            )

    def probe(self, sha256: str) -> MediaInfo | None:
        """The remembered probe of this content, if any."""
        row = (
            self._connect()
            .execute(
                "SELECT info FROM probes WHERE sha256=? AND version=?",
                (sha256, PROBE_CACHE_VERSION),
            )
            .fetchone()
        )
        return MediaInfo.from_json(row[0]) if row else None

    def remember_probe(self, sha256: str, info: MediaInfo) -> None:
        """Remember a probe result for this content."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO probes VALUES (?, ?, ?)",
                (sha256, PROBE_CACHE_VERSION, info.to_json()),
            )


@dataclass
class InspectStats:
    """How much real work an inspector did: for tests and the planning benchmark."""

    hashed: int = 0
    probed: int = 0
    cache_hits: int = 0


class MediaInspector:
    """Hash and probe local files, through an optional `ProbeCache`.

    Example: `MediaInspector(ProbeCache(settings.media.cache_path / "probe-cache.sqlite3"))`.
    """

    def __init__(self, cache: ProbeCache | None = None) -> None:
        self.cache = cache
        self.stats = InspectStats()

    def digest(self, path: Path) -> str:
        """sha256 of the file, from the cache when its stat is unchanged."""
        if self.cache is not None:
            known = self.cache.digest(path)
            if known is not None:
                return known
        self.stats.hashed += 1
        sha = sha256_file(path)
        if self.cache is not None:
            self.cache.remember_digest(path, sha)
        return sha

    def inspect(self, path: Path) -> tuple[str, MediaInfo]:
        """(sha256, probe) of a local file. Raises MediaError for unreadable media."""
        sha = self.digest(path)
        if self.cache is not None:
            cached = self.cache.probe(sha)
            if cached is not None:
                self.stats.cache_hits += 1
                return sha, cached
        self.stats.probed += 1
        info = probe(path)
        if self.cache is not None:
            self.cache.remember_probe(sha, info)
        return sha, info


def shown_url(url: str) -> str:
    """A URL fit for a message: without its query, fragment or credentials, which may hold a
    presigned signature or a token.

    >>> shown_url("http://user:pw@s3.local/b/out.mp4?X-Amz-Signature=abc#t")
    'http://s3.local/b/out.mp4'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
