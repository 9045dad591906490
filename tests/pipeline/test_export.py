"""`python -m pipeline export`: real JPEGs ingested into a real store, exported, and the MP4
decoded back with PyAV: frame count, size, fps, duration, time order (planted colours), the
letterbox of a frame of another shape, deflicker measured on the decoded video, and frames
whose original is gone or broken left out and named. The filters against the dashboard's
export are in tests/dashboard/test_video.py."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import store
from pipeline.cli import cli
from pipeline.ingest import ingest_folder
from pipeline.settings import Settings
from pipeline.video import Deflicker, output_size
from store import facts

START = datetime(2024, 5, 1, 10, 0, 0)
# Twelve colours far apart, so JPEG and yuv420 cannot move one onto another.
PALETTE = [
    (230, 30, 30),
    (30, 230, 30),
    (30, 30, 230),
    (230, 230, 30),
    (230, 30, 230),
    (30, 230, 230),
    (240, 240, 240),
    (20, 20, 20),
    (240, 140, 20),
    (140, 20, 240),
    (20, 140, 90),
    (130, 130, 130),
]


def save(path: Path, pixels: np.ndarray, when: datetime | None) -> Path:
    exif = Image.Exif()
    if when is not None:
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=92, exif=exif)
    return path


def ingest(folder: Path, db: Path) -> None:
    summary = ingest_folder(folder, db, Settings(workers=1), progress=False)
    assert summary.failed == 0, summary.describe()


def export(db: Path, *args: str):
    result = CliRunner().invoke(cli, ["export", "--db", str(db), "--no-progress", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def decode(path: Path) -> tuple[av.video.stream.VideoStream, list[np.ndarray], float]:
    """(stream facts, every frame as RGB, container duration in seconds)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        info = {
            "codec": stream.codec_context.name,
            "width": stream.width,
            "height": stream.height,
            "fps": float(stream.average_rate),
        }
        return info, frames, container.duration / av.time_base


def luma(frame: np.ndarray) -> float:
    return float((frame.astype(np.float32) @ [0.299, 0.587, 0.114]).mean())


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> tuple[Path, list[int], Path]:
    """A store of twelve solid-colour frames ten minutes apart whose file names sort in another
    order than their times; the seventh (by time) is portrait. Returns (store, palette index of
    each frame in time order, folder)."""
    tmp = tmp_path_factory.mktemp("colours")
    folder = tmp / "frames"
    names = [7, 2, 11, 0, 5, 9, 3, 10, 1, 8, 6, 4]  # file name number, in time order
    for i, name in enumerate(names):
        shape = (96, 64, 3) if i == 6 else (64, 96, 3)  # (h, w): one portrait frame
        pixels = np.empty(shape, np.uint8)
        pixels[:] = PALETTE[i]
        save(folder / f"cam_{name:02d}.jpg", pixels, START + timedelta(minutes=10 * i))
    db = tmp / "colours.duckdb"
    ingest(folder, db)
    return db, list(range(len(names))), folder


def nearest(colour: np.ndarray) -> int:
    return int(np.argmin([np.abs(colour - np.array(p)).sum() for p in PALETTE]))


def test_mp4_holds_the_frames_in_time_order_at_the_asked_size_and_rate(colours, tmp_path):
    db, order, _ = colours
    out = tmp_path / "clip.mp4"
    result = export(db, "--format", "mp4", "--out", str(out), "--fps", "6", "--width", "96")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"exported 12 of 12 frames to {out}: H.264 MP4 96x64, 6 fps, 2.0 s"
    )
    info, frames, duration = decode(out)
    assert info == {"codec": "h264", "width": 96, "height": 64, "fps": 6.0}
    assert len(frames) == 12 and duration == pytest.approx(2.0, abs=0.05)
    centres = [nearest(f[24:40, 40:56].reshape(-1, 3).mean(0)) for f in frames]
    assert centres == order  # time order, not file-name order
    assert not list(tmp_path.glob(".*.part"))


def test_without_a_width_the_video_keeps_the_frames_own_size(colours, tmp_path):
    # 96x64 frames: the video is 96 wide, not blown up to 1280 (a 256-pixel webcam was 5x)
    db, _, _ = colours
    out = tmp_path / "clip.mp4"
    result = export(db, "--out", str(out), "--fps", "6")
    assert result.exit_code == 0, result.output
    assert decode(out)[0]["width"] == 96 and "H.264 MP4 96x64" in result.output
    from pipeline.video import MAX_AUTO_WIDTH, VideoOptions

    assert VideoOptions().width is None and MAX_AUTO_WIDTH == 1280


def test_a_frame_of_another_shape_is_letterboxed_not_stretched(colours, tmp_path):
    db, order, _ = colours
    out = tmp_path / "clip.mp4"
    assert export(db, "--out", str(out), "--fps", "6", "--width", "96").exit_code == 0
    _, frames, _ = decode(out)
    portrait = frames[6].astype(np.float32)  # 64x96 upright, fitted into 96x64: 43x64
    picture = portrait[:, 30:66]
    assert nearest(picture.reshape(-1, 3).mean(0)) == order[6]
    assert portrait[:, :24].max() < 40 and portrait[:, -24:].max() < 40  # black bars
    assert frames[5][:, :24].mean() > 60  # a landscape frame fills


def test_output_size_is_even_and_keeps_the_aspect():
    assert output_size(1280, (1920, 1080)) == (1280, 720)
    assert output_size(1001, (4000, 3000)) == (1000, 750)
    assert output_size(640, (1080, 1920)) == (640, 1138)
    # a portrait frame at the widest --width: no side longer than 7680 (8K UHD)
    assert output_size(7680, (1080, 1920)) == (4320, 7680)
    assert output_size(7680, (2000, 3990)) == (3850, 7680)
    assert output_size(7680, (4320, 7680)) == (4320, 7680)
    assert all(n % 2 == 0 for n in output_size(333, (777, 555)))


def test_text_formats_follow_the_out_suffix(colours, tmp_path):
    db, order, folder = colours
    listed = tmp_path / "frames.txt"
    result = export(db, "--out", str(listed))
    assert result.exit_code == 0, result.output
    assert "exported 12 of 12 frames" in result.output and "(list)" in result.output
    lines = listed.read_text().splitlines()
    with store.connect(db, read_only=True) as con:
        frames = facts.export_frames(con, facts.FrameFilter(), "not_junk")
    assert lines == list(frames["abs_path"])  # time order, as the dashboard
    assert sorted(lines) == sorted(str(p) for p in folder.glob("*.jpg"))
    bad = export(db, "--out", str(tmp_path / "frames.bin"))
    assert bad.exit_code == 1
    assert bad.output.strip().startswith("error: give --format (mp4|csv|list|ffconcat)")


@pytest.fixture(scope="module")
def flicker(tmp_path_factory) -> tuple[Path, Path]:
    """Two stores of 40 textured frames of one scene (a dawn ramp in brightness): one whose
    exposure flickers +-15% from frame to frame, one steady."""
    tmp = tmp_path_factory.mktemp("flicker")
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:72, 0:128].astype(np.float32)
    scene = 90 + 0.4 * x - 0.3 * y + rng.normal(0, 10, (72, 128))
    stores = []
    for name, amplitude in (("flicker", 0.15), ("steady", 0.0)):
        folder = tmp / name
        jitter = np.random.default_rng(5).uniform(-amplitude, amplitude, 40)
        for i in range(40):
            level = (0.7 + 0.5 * i / 39) * (1 + jitter[i])
            pixels = np.clip(scene[..., None] * level * [1.0, 0.95, 0.85], 0, 255)
            save(
                folder / f"f_{i:03d}.jpg", pixels.astype(np.uint8), START + timedelta(minutes=5 * i)
            )
        db = tmp / f"{name}.duckdb"
        ingest(folder, db)
        stores.append(db)
    return stores[0], stores[1]


def lumas(path: Path) -> np.ndarray:
    _, frames, _ = decode(path)
    return np.array([luma(f) for f in frames])


def test_deflicker_smooths_a_flickering_sequence_and_keeps_the_slow_change(flicker, tmp_path):
    db, _ = flicker
    raw, smooth = tmp_path / "raw.mp4", tmp_path / "smooth.mp4"
    assert export(db, "--out", str(raw), "--width", "128").exit_code == 0
    result = export(db, "--out", str(smooth), "--width", "128", "--deflicker", "9")
    assert result.exit_code == 0 and "deflicker over 9 frames" in result.output
    before, after = lumas(raw), lumas(smooth)
    assert len(before) == len(after) == 40
    jump_before = np.abs(np.diff(before)).mean()
    jump_after = np.abs(np.diff(after)).mean()
    print(f"mean luma jump: {jump_before:.2f} -> {jump_after:.2f}")
    assert jump_after < 0.35 * jump_before, (jump_before, jump_after)
    # the dawn stays: the last frames are still much brighter than the first ones
    assert after[-5:].mean() - after[:5].mean() > 0.6 * (before[-5:].mean() - before[:5].mean())


def test_deflicker_leaves_a_steady_sequence_unchanged(flicker, tmp_path):
    _, db = flicker
    raw, smooth = tmp_path / "raw.mp4", tmp_path / "smooth.mp4"
    assert export(db, "--out", str(raw), "--width", "128").exit_code == 0
    assert export(db, "--out", str(smooth), "--width", "128", "--deflicker").exit_code == 0
    _, a, _ = decode(raw)
    _, b, _ = decode(smooth)
    diff = [np.abs(x.astype(np.int16) - y.astype(np.int16)).mean() for x, y in zip(a, b)]
    assert len(a) == len(b) == 40 and max(diff) < 0.5, max(diff)


def test_deflicker_window_is_centred_and_streams_with_half_a_window_of_lookahead():
    window = Deflicker(5)
    frames = [(np.full((2, 2, 3), 100, np.uint8), luma) for luma in (100, 100, 50, 100, 100, 100)]
    out = []
    for i, (pixels, value) in enumerate(frames):
        ready = window.push(pixels, value)
        assert len(ready) == (1 if i >= 2 else 0)  # lookahead: 5 // 2 = 2 frames
        out += ready
    out += window.flush()
    gains = [gain for _, gain in out]
    assert gains == pytest.approx(
        [
            1.0,  # the ends: the window shrinks and stays centred
            (100 + 100 + 50) / 3 / 100,
            (100 + 100 + 50 + 100 + 100) / 5 / 50,  # the dark frame, brought to its neighbours
            (100 + 50 + 100 + 100 + 100) / 5 / 100,
            1.0,
            1.0,
        ]
    )


@pytest.fixture
def broken(tmp_path) -> tuple[Path, dict[str, Path]]:
    """Six frames ingested; then one file is deleted, one is cut short; one has no time."""
    folder = tmp_path / "frames"
    files = {}
    for i in range(6):
        pixels = np.full((48, 64, 3), 40 * i, np.uint8)
        when = None if i == 4 else START + timedelta(minutes=i)
        files[f"f{i}"] = save(folder / f"snap{i}.jpg", pixels, when)
    os.utime(files["f4"], (0, 0))  # mtime 1970 too: the frame has no time
    db = tmp_path / "broken.duckdb"
    ingest(folder, db)
    files["f1"].unlink()
    data = files["f3"].read_bytes()
    files["f3"].write_bytes(data[: len(data) // 3])
    return db, files


def test_frames_whose_original_is_gone_or_broken_are_left_out_and_named(broken, tmp_path):
    db, files = broken
    out = tmp_path / "v.mp4"
    result = export(db, "--out", str(out), "--width", "64", "--fps", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"exported 3 of 6 frames to {out}")
    assert f"left out: 1 frame without a time (a time-lapse needs one): {files['f4']}" in lines
    assert f"left out: 1 frame whose file is gone: {files['f1']}" in lines
    unreadable = next(line for line in lines if "could not be read" in line)
    assert str(files["f3"]) in unreadable and "truncated" in unreadable.lower()
    _, frames, _ = decode(out)
    assert [round(luma(f) / 40) for f in frames] == [0, 2, 5]


def test_no_readable_frame_is_one_error_line_and_no_file(broken, tmp_path):
    db, files = broken
    for name in ("f0", "f2", "f5"):
        files[name].unlink()
    out = tmp_path / "v.mp4"
    result = export(db, "--out", str(out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: no video written: none of the 5 frames could be read (first: {files['f0']}"
    )
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_unknown_filter_values_are_one_line_naming_the_flag(colours, tmp_path):
    db, _, _ = colours
    out = str(tmp_path / "x.csv")
    cases = {
        ("--daylight", "dusk"): "error: --daylight: unknown value 'dusk' (this store has:",
        ("--hours", "6-25"): "error: --hours wants an hour range like 6-18",
        ("--thr", "pct101"): "error: --thr pctNN: the percentile must be 0-100",
        ("--thr", "flagged"): "error: --thr needs an analysis run; this store has none",
        ("--thr", "most"): "error: --thr wants all, flagged, pctNN",
        ("--run", "7"): "error: --run 7 is not a complete analysis run in this store",
    }
    for args, message in cases.items():
        result = export(db, "--out", out, *args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output, (args, result.output)
    clean = export(db, "--out", out, "--frames", "clean")  # no run: nothing is flagged
    assert clean.exit_code == 0 and clean.output.startswith("exported 12 of 12 frames")
    assert "note: the store has no analysis run yet, so no frame is flagged" in clean.output
    assert "note:" not in export(db, "--out", out).output  # not_junk: flags play no part
    result = export(db, "--out", out, "--from", "2024-06-01")
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: no frames to export with --frames not_junk and "
        "--from 2024-06-01 (left out: 12 frames outside the filters)"
    )


def test_an_output_that_cannot_be_written_is_one_line(colours, tmp_path):
    db, _, _ = colours
    missing = export(db, "--out", str(tmp_path / "nowhere" / "v.mp4"))
    assert missing.exit_code == 1
    assert missing.output.strip() == (
        f"error: --out: the folder {tmp_path / 'nowhere'} does not exist"
    )
    for name in ("v.mp4", "v.csv"):  # /proc takes no new files, not even from root
        refused = export(db, "--out", f"/proc/{name}")
        assert refused.exit_code == 1
        assert refused.output.strip().startswith(f"error: cannot write /proc/{name}: ")


@pytest.mark.parametrize("suffix", ["csv", "txt", "ffconcat"])
def test_a_text_export_that_cannot_be_finished_leaves_the_earlier_one_whole(
    colours, tmp_path, suffix
):
    """A write that fails part way (here the file-size limit, as a full disk would) is one
    error line; the earlier export at --out is kept as it was and no part file is left."""
    import subprocess
    import sys

    db, _, _ = colours
    out = tmp_path / f"frames.{suffix}"
    earlier = b"an earlier export\n"
    out.write_bytes(earlier)
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))\n"
        "from pipeline.cli import main\n"
        "sys.argv = ['pipeline', 'export', '--db', sys.argv[1], '--out', sys.argv[2], "
        "'--no-progress']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(db), str(out)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith(f"error: cannot write {out}: "), done.stderr
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_an_output_that_is_the_store_or_a_frame_is_refused_and_nothing_is_lost(colours, tmp_path):
    db, _, folder = colours
    store_copy = tmp_path / "copy.duckdb"
    store_copy.write_bytes(db.read_bytes())
    before = store_copy.read_bytes()
    for fmt in ("list", "csv", "mp4"):
        refused = export(store_copy, "--out", str(store_copy), "--format", fmt)
        assert refused.exit_code == 1, refused.output
        assert refused.output.strip() == (
            f"error: --out {store_copy} is the store: writing there would destroy it; "
            "nothing was written. Give --out another file name"
        )
        assert store_copy.read_bytes() == before
    frame = folder / "cam_03.jpg"
    picture = frame.read_bytes()
    refused = export(db, "--out", str(frame), "--format", "mp4")
    assert refused.exit_code == 1
    assert "is one of the frames exported: writing there would destroy it" in refused.output
    assert frame.read_bytes() == picture
    link = tmp_path / "link.txt"  # the store under another name
    link.symlink_to(store_copy)
    assert export(store_copy, "--out", str(link)).exit_code == 1
    assert store_copy.read_bytes() == before


def test_a_store_without_frames_says_so_and_writes_nothing(tmp_path):
    empty = tmp_path / "camera"
    empty.mkdir()
    db = tmp_path / "empty.duckdb"
    ingest_folder(empty, db, Settings(workers=1), progress=False)  # a store, no frames
    for name in ("x.csv", "x.mp4"):
        refused = export(db, "--out", str(tmp_path / name))
        assert refused.exit_code == 1
        assert refused.output.strip() == (
            f"error: the store {db} has no frames yet, so there is nothing to export: run "
            f"`python -m pipeline ingest FOLDER --db {db}` (or `run`) first"
        )
        assert not (tmp_path / name).exists()
