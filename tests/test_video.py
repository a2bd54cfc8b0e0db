"""Frames stage: decoding real footage into one HDF5 file per sequence; bad input recorded, never fatal."""

from __future__ import annotations

import json

import av
import h5py
import numpy as np
import pytest

from neuface.errors import NeufaceError
from neuface.status import StageStatus, read_status, read_status_attrs, write_status, write_status_attrs
from neuface.video import VideoReader, frames_info, output_size, read_frames


def _raw_frames(path, n):
    with av.open(str(path)) as c:
        out = []
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def _write_video(path, n_frames, size=(64, 48), fps=25):
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        c.start_encoding()
        for i in range(n_frames):
            img = np.full((size[1], size[0], 3), (i * 20) % 255, dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def _sheet(tmp_path, rows):
    path = tmp_path / "videos.tsv"
    # monocular and multi-view rows belong to different datasets (peers' views are compared per dataset)
    lines = ["sequence\tview\tsplit\tpath\tdataset"] + [
        f"{s}\t{v}\ttrain\t{p}\t{'mono' if v == 'mono' else 'multi'}" for s, v, p in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------- decoding
def test_reader_matches_raw_decode(carphone_path):
    with VideoReader(carphone_path, max_frames=12) as reader:
        items = list(reader)
    assert reader.info.width == 176 and reader.info.height == 144 and reader.info.n_frames_hint == 120
    frames = np.stack([f for _, f in items])
    assert frames.shape == (12, 144, 176, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, _raw_frames(carphone_path, 12))
    times = np.array([t for t, _ in items])
    np.testing.assert_allclose(np.diff(times), 1001 / 30000, rtol=1e-6)


def test_fps_resampling_picks_nearest_frames(carphone_path):
    with VideoReader(carphone_path, fps=10, max_frames=10) as reader:
        items = list(reader)
    raw = _raw_frames(carphone_path, 40)
    src_times = np.arange(40) * 1001 / 30000
    for k, (t, frame) in enumerate(items):
        nearest = int(np.argmin(np.abs(src_times - k / 10)))
        assert t == pytest.approx(src_times[nearest])
        np.testing.assert_array_equal(frame, raw[nearest])
    assert reader.fps == 10.0
    with VideoReader(carphone_path, fps=60, max_frames=5) as reader:  # above the source rate: keep all
        assert len(list(reader)) == 5 and reader.fps == pytest.approx(30000 / 1001)


def test_max_size_keeps_aspect(carphone_path):
    assert output_size(176, 144, 100) == (100, 82) and output_size(176, 144, None) == (176, 144)
    with VideoReader(carphone_path, max_size=88, max_frames=2) as reader:
        (_, f0), _ = list(reader)
    assert f0.shape == (72, 88, 3)
    with pytest.raises(NeufaceError, match="fps must be positive"):
        VideoReader(carphone_path, fps=0)


# ------------------------------------------------------------------------------------------- frames stage
def test_frames_cli_on_real_clip(tmp_path, carphone_path, run_cli):
    sheet = _sheet(tmp_path, [("car", "mono", carphone_path)])
    out, js = tmp_path / "frames" / "car.h5", tmp_path / "car.json"
    assert run_cli("frames", "--sheet", sheet, "--sequence", "car", "--out", out, "--max-frames", 20,
                   "--status-json", js) == 0
    info = frames_info(out)
    assert info["status"].ok and info["views"] == ["mono"] and info["n_frames"] == 20
    attrs = info["view_attrs"]["mono"]
    assert attrs["width"] == 176 and attrs["height"] == 144 and attrs["shape"] == (20, 144, 176, 3)
    assert attrs["source"] == str(carphone_path) and attrs["fps"] == pytest.approx(29.97, abs=1e-2)
    with h5py.File(out) as f:
        ds = f["views/mono/frames"]
        assert ds.chunks == (1, 144, 176, 3) and ds.compression == "lzf"
        assert f.attrs["sequence"] == "car" and list(f.attrs["views"]) == ["mono"]
        assert json.loads(f.attrs["trimmed"]) == {} and f.attrs["neuface_version"]
    np.testing.assert_array_equal(read_frames(out, "mono", 5, 8), _raw_frames(carphone_path, 8)[5:8])
    assert read_status(js) == info["status"]
    with pytest.raises(NeufaceError, match="outside"):
        read_frames(out, "mono", 0, 21)
    with pytest.raises(NeufaceError, match="no view 'front'"):
        read_frames(out, "front")
    assert run_cli("frames", "--sheet", sheet, "--sequence", "nope", "--out", tmp_path / "n.h5") == 2


@pytest.fixture
def bad_inputs(tmp_path, carphone_path):
    """Sheet rows covering each kind of bad input, next to a good sequence."""
    d = tmp_path / "videos"
    d.mkdir()
    data = carphone_path.read_bytes()
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: unreadable
    (d / "empty.mp4").write_bytes(b"")
    with av.open(str(d / "zero.mp4"), mode="w") as c:  # a valid container with no frames
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    _write_video(d / "short.mp4", 7)
    rows = [
        ("good", "mono", carphone_path),
        ("missing", "mono", d / "does_not_exist.mp4"),
        ("random", "mono", d / "random.mp4"),
        ("truncated", "mono", d / "truncated.mp4"),
        ("empty", "mono", d / "empty.mp4"),
        ("zero", "mono", d / "zero.mp4"),
        ("twoview", "a", carphone_path),
        ("twoview", "b", d / "short.mp4"),
        ("oneviewbad", "a", carphone_path),
        ("oneviewbad", "b", d / "random.mp4"),
        ("allbad", "a", d / "random.mp4"),
        ("allbad", "b", d / "empty.mp4"),
    ]
    return _sheet(tmp_path, rows)


EXPECTED_FAILURES = {
    "missing": "video file not found",
    "random": "Invalid data found",
    "truncated": "corrupt/truncated",
    "empty": "empty (0 bytes)",
    "zero": "no video stream",
    "allbad": "all 2 views failed",
}


def test_bad_inputs_are_recorded_and_others_finish(tmp_path, bad_inputs, run_cli, capsys):
    out = tmp_path / "frames"
    for seq in ["good", *EXPECTED_FAILURES, "twoview", "oneviewbad"]:
        capsys.readouterr()
        rc = run_cli("frames", "--sheet", bad_inputs, "--sequence", seq, "--out", out / f"{seq}.h5",
                     "--max-frames", 15)
        assert rc == 0, seq
        status = read_status(out / f"{seq}.h5")
        assert status.sequence == seq and status.stage == "frames"
        if seq in EXPECTED_FAILURES:
            assert status.status == "failed" and EXPECTED_FAILURES[seq] in status.reason, (seq, status)
            logged = [ln for ln in capsys.readouterr().err.splitlines() if f"frames {seq}:" in ln]
            assert len(logged) == 1 and logged[0].endswith(f"WARNING neuface.video.extract: frames {seq}: "
                                                           f"failed ({status.reason})"), logged
            assert "\n" not in status.reason
            with h5py.File(out / f"{seq}.h5") as f:
                assert "views" not in f and f.attrs["n_frames"] == 0
        else:
            assert status.ok, status
            assert seq != "good" or status.warnings == ()
    assert frames_info(out / "good.h5")["n_frames"] == 15

    two = frames_info(out / "twoview.h5")
    assert two["n_frames"] == 7 and two["trimmed"] == {"a": 15}
    assert two["view_attrs"]["a"]["shape"][0] == 7 and two["view_attrs"]["b"]["shape"] == (7, 48, 64, 3)
    assert two["status"].warnings == ("trimmed_views:a:15->7", "views have different frame rates: [25.0, 29.97]")

    one = frames_info(out / "oneviewbad.h5")
    assert one["views"] == ["a"] and "b" in one["status"].details["dropped_views"]
    assert [w.split(":", 2)[:2] for w in one["status"].warnings] == [["dropped_view", "b"]]
    assert "Invalid data" in one["status"].warnings[0]


def test_failing_view_can_fail_the_sequence(tmp_path, bad_inputs, run_cli):
    out = tmp_path / "x.h5"
    assert run_cli("frames", "--sheet", bad_inputs, "--sequence", "oneviewbad", "--out", out,
                   "--max-frames", 3, "--on-view-error", "fail") == 0
    status = read_status(out)
    assert not status.ok and status.reason.startswith("view(s) failed: b:")


def test_missing_views_recorded(tmp_path, carphone_path, run_cli):
    sheet = _sheet(tmp_path, [("s1", "front", carphone_path), ("s1", "left", carphone_path),
                              ("s2", "front", carphone_path)])
    out = tmp_path / "s2.h5"
    assert run_cli("frames", "--sheet", sheet, "--sequence", "s2", "--out", out, "--max-frames", 2) == 0
    status = read_status(out)
    assert status.ok and status.details["missing_views"] == ["left"]
    assert status.warnings == ("missing_views:left",)


def _faststart_cut(src_path, out, fraction):
    """carphone remuxed with the moov atom first (a streamable mp4), then cut to ``fraction`` of its bytes."""
    remuxed = out.with_suffix(".full.mp4")
    with av.open(str(src_path)) as src, av.open(str(remuxed), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = stream
                dst.mux(pkt)
    data = remuxed.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def test_truncated_streamable_file_keeps_frames_with_warning(tmp_path, carphone_path, run_cli):
    _faststart_cut(carphone_path, tmp_path / "cut.mp4", 0.5)
    sheet = _sheet(tmp_path, [("cut", "mono", tmp_path / "cut.mp4")])
    assert run_cli("frames", "--sheet", sheet, "--sequence", "cut", "--out", tmp_path / "cut.h5") == 0
    info = frames_info(tmp_path / "cut.h5")
    assert info["status"].ok and 0 < info["n_frames"] < 120
    assert "truncated file?" in info["status"].details["truncated_views"]["mono"]
    assert info["status"].warnings == (f"truncated_decode:mono:{info['n_frames']}/120",)
    assert info["view_attrs"]["mono"]["n_frames_expected"] == 120 and info["view_attrs"]["mono"]["truncated"]


# ------------------------------------------------------------------------------------------- status records
def test_status_roundtrip_json_and_attrs(tmp_path):
    st = StageStatus("s1", "frames", details={"n": np.int64(3), "trimmed": {"a": 5}}, warnings=["w1"])
    write_status(st, tmp_path / "s.json")
    back = read_status(tmp_path / "s.json")
    assert back.details == {"n": 3, "trimmed": {"a": 5}} and back.warnings == ("w1",) and back.ok
    with h5py.File(tmp_path / "s.h5", "w") as f:
        write_status_attrs(f.attrs, st)
    with h5py.File(tmp_path / "s.h5") as f:
        assert read_status_attrs(f.attrs) == back
        assert isinstance(f.attrs["status"], str)
    assert read_status(tmp_path / "s.h5") == back


def test_status_failure_and_propagation(tmp_path):
    failed = StageStatus.failed("s1", "frames", "no frames\n decoded")
    assert failed.reason == "no frames decoded" and not failed.ok
    down = failed.propagate("landmarks")
    assert down.stage == "landmarks" and down.reason == "upstream frames: no frames decoded"
    assert down.propagate("fit").reason == "upstream frames: no frames decoded"
    with pytest.raises(NeufaceError, match="needs a reason"):
        StageStatus("s1", "frames", "failed")
    with pytest.raises(NeufaceError, match="status must be one of"):
        StageStatus("s1", "frames", "meh")
    with pytest.raises(NeufaceError, match="only a failed"):
        StageStatus("s1", "frames").propagate("x")
    (tmp_path / "junk").write_bytes(b"\xff\xfe junk")
    with pytest.raises(NeufaceError, match="neither"):
        read_status(tmp_path / "junk")
    with h5py.File(tmp_path / "plain.h5", "w"):
        pass
    with pytest.raises(NeufaceError, match="no status attributes"):
        read_status(tmp_path / "plain.h5")


def test_truncation_without_a_header_frame_count_is_found_from_the_duration(tmp_path, carphone_path):
    """Matroska has no frame count: a cut file is found short of duration x fps (the stream's DURATION tag)."""
    full = tmp_path / "x.mkv"
    with av.open(str(carphone_path)) as src, av.open(str(full), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = stream
                dst.mux(pkt)
    (tmp_path / "cut.mkv").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with VideoReader(full) as r:
        assert sum(1 for _ in r) == 120 and r.info.n_frames_hint == 0
        assert r.n_expected == 120 and not r.truncated
    with VideoReader(tmp_path / "cut.mkv") as r:
        n = sum(1 for _ in r)
        assert 0 < n < 100 and r.truncated and r.n_expected == 120 and "about 120 frames" in r.error
    with VideoReader(tmp_path / "cut.mkv", max_frames=10) as r:  # stopping early on purpose is not truncation
        assert sum(1 for _ in r) == 10 and not r.truncated


def test_truncation_tolerance():
    from neuface.video.decode import is_truncated

    assert is_truncated(119, 120, exact=True) and not is_truncated(120, 120, exact=True)
    assert not is_truncated(115, 120, exact=False) and is_truncated(113, 120, exact=False)
    assert not is_truncated(5, 0, exact=False)
