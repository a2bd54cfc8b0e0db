"""Video decoding with PyAV (bundled FFmpeg): RGB frames, optional frame-rate resampling, size cap, frame cap.

Resampling picks source frames by timestamp (never interpolates): output frame ``k`` is the source frame whose
presentation time is nearest to ``t0 + k / fps``. Rates at or above the source rate keep every frame (a frame
is never emitted twice).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from neuface.errors import NeufaceError

log = logging.getLogger(__name__)


class VideoDecodeError(NeufaceError):
    """A video cannot be opened or decoded (missing, unreadable, corrupt, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (before any resizing/resampling)."""

    path: str
    codec: str
    width: int
    height: int
    fps: float | None  # average frame rate, if the container knows it
    n_frames_hint: int  # frame count from the header (0 if unknown; not trusted)
    duration: float | None  # seconds (the stream's, else its DURATION tag, else the container's)

    @property
    def n_frames_expected(self) -> tuple[int, bool]:
        """``(frames the file should decode to, exact)``: the header's frame count (exact), else
        ``round(duration × fps)`` (an estimate), else ``(0, False)`` (unknown)."""
        if self.n_frames_hint > 0:
            return self.n_frames_hint, True
        if self.duration and self.fps and self.duration > 0:
            return round(self.duration * self.fps), False
        return 0, False


def is_truncated(n_decoded: int, expected: int, exact: bool) -> bool:
    """Whether ``n_decoded`` frames fall short of ``expected``: any shortfall of an exact (header) count; more
    than ``max(2, 5 %)`` of an estimate from duration × fps (durations are rounded, audio may run longer)."""
    if expected <= 0:
        return False
    slack = 0 if exact else max(2, round(0.05 * expected))
    return n_decoded < expected - slack


def output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """``(width, height)`` after scaling so that the longer side is at most ``max_size`` (aspect kept)."""
    if max_size is None or max(width, height) <= max_size:
        return width, height
    if max_size < 2:
        raise NeufaceError(f"max_size must be at least 2 pixels, got {max_size}")
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class VideoReader:
    """Iterate over a video's frames as ``(time_s, rgb)`` with ``rgb`` a ``(H, W, 3)`` uint8 array.

    Args:
        path: video file.
        fps: target frame rate (None keeps every frame).
        max_frames: stop after this many output frames.
        max_size: downscale so that the longer side is at most this many pixels.

    After iteration, ``n_decoded`` is the number of source frames decoded and ``truncated`` tells whether
    decoding stopped early (``error`` holds the message): on a decoder/demuxer error mid-stream, or when the
    data ended before the frame count the container announces (:attr:`VideoInfo.n_frames_expected`: the
    header's count, else duration × fps with a small tolerance). ``n_expected`` is that count (0: unknown).
    A ``max_frames`` cap that stops reading early is not a truncation. Use as a context manager.

    Raises:
        VideoDecodeError: when the file is missing, cannot be opened or has no video stream.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None,
                 max_size: int | None = None):
        if fps is not None and not fps > 0:
            raise NeufaceError(f"fps must be positive, got {fps}")
        if max_frames is not None and max_frames < 1:
            raise NeufaceError(f"max_frames must be at least 1, got {max_frames}")
        self.path = Path(path)
        self.max_frames = max_frames
        self.n_decoded = 0
        self.n_expected = 0
        self.truncated = False
        self.error = ""
        if not self.path.exists():
            raise VideoDecodeError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise VideoDecodeError(f"not a regular file: {self.path}")
        if self.path.stat().st_size == 0:
            raise VideoDecodeError(f"video file is empty (0 bytes): {self.path}")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoDecodeError(f"cannot open video {self.path}: {_msg(exc)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(f"no video stream in {self.path} (0 frames)")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate
        duration = _duration(self._container, self._stream)
        self.info = VideoInfo(str(self.path), ctx.name, int(ctx.width), int(ctx.height),
                              float(rate) if rate else None, int(self._stream.frames or 0), duration)
        if self.info.width <= 0 or self.info.height <= 0:
            self._container.close()
            raise VideoDecodeError(f"video stream of {self.path} has no frame size (corrupt header?)")
        self.n_expected, self._expected_exact = self.info.n_frames_expected
        self.width, self.height = output_size(self.info.width, self.info.height, max_size)
        src_fps = self.info.fps
        self.resample = fps is not None and (src_fps is None or fps < src_fps * 0.999)
        self.fps = float(fps) if self.resample else src_fps

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _source(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """Decoded source frames with times relative to the first frame; stops quietly on corrupt data."""
        t0: float | None = None
        period = 1.0 / self.info.fps if self.info.fps else 1.0 / 25.0
        try:
            for frame in self._container.decode(self._stream):
                t = frame.time
                if t is None:
                    t = self.n_decoded * period + (t0 or 0.0)
                if t0 is None:
                    t0 = t
                self.n_decoded += 1
                yield t - t0, frame
            # reached the end of the data before the announced frame count
            if self.n_decoded > 0 and is_truncated(self.n_decoded, self.n_expected, self._expected_exact):
                self.truncated = True
                announced = ("the {} frames the header announces" if self._expected_exact
                             else "about {} frames (duration x frame rate)").format(self.n_expected)
                self.error = f"decoded {self.n_decoded} of {announced} (truncated file?)"
                log.warning("%s: %s", self.path, self.error)
        except (av.error.FFmpegError, EOFError) as exc:
            self.truncated = True
            self.error = _msg(exc)
            log.warning("decoding %s stopped after %d frame(s): %s", self.path, self.n_decoded, self.error)

    def _selected(self) -> Iterator[tuple[float, av.VideoFrame]]:
        if not self.resample:
            yield from self._source()
            return
        step = 1.0 / float(self.fps)  # type: ignore[arg-type]
        k = 0
        prev: tuple[float, av.VideoFrame] | None = None
        last_emitted = -math.inf
        for t, frame in self._source():
            while k * step <= t:
                target = k * step
                pick = prev if prev is not None and target - prev[0] < t - target else (t, frame)
                if pick[0] > last_emitted:
                    last_emitted = pick[0]
                    yield pick
                k += 1
            prev = (t, frame)

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        n = 0
        for t, frame in self._selected():
            if self.max_frames is not None and n >= self.max_frames:
                break
            if (self.width, self.height) == (frame.width, frame.height):
                rgb = frame.to_ndarray(format="rgb24")
            else:
                rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height,
                                       interpolation="AREA")
            yield t, rgb
            n += 1


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds of the video stream: its duration, else its DURATION tag (Matroska), else the container's."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            hours, minutes, seconds = str(tag).split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            log.debug("unparsable DURATION tag %r", tag)
    if container.duration:
        return float(container.duration) / av.time_base
    return None


def _msg(exc: BaseException) -> str:
    """One line; FFmpeg errors without their errno and repeated file name."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.error.FFmpegError) else None
    if isinstance(exc, av.error.InvalidDataError):
        text = f"{text or 'invalid data'} (not a video, or corrupt/truncated)"
    text = text or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


__all__ = ["VideoDecodeError", "VideoInfo", "VideoReader", "is_truncated", "output_size"]
