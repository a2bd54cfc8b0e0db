"""Video input: decoding (PyAV), the per-sequence HDF5 frames container, and the ``frames`` stage."""

from neuface.video.decode import VideoDecodeError, VideoInfo, VideoReader, output_size
from neuface.video.extract import extract_sequence
from neuface.video.store import FORMAT, frames_info, read_frames

__all__ = [
    "FORMAT",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "extract_sequence",
    "frames_info",
    "output_size",
    "read_frames",
]
