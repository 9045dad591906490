"""The synthetic demo time-lapse: deterministic files, EXIF, ground truth, light, weather."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.demo import DEMO_PLACE, KINDS, anomalies, render_demo, timeline
from pipeline.demo.weather import generate_weather
from pipeline.errors import InputError

SIZE = (160, 90)
N_FRAMES = 130  # 27 h from local midnight: a night, a whole day, and every anomaly kind


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return render_demo(out, n_frames=N_FRAMES, seed=7, size=SIZE, progress=False)


@pytest.fixture(scope="module")
def frames(demo) -> pd.DataFrame:
    """scene.csv joined with ground_truth.csv, plus each file's mean luma (None if unreadable)."""
    scene = pd.read_csv(demo.scene_csv)
    truth = pd.read_csv(demo.truth_csv)
    table = scene.merge(truth, on="path", validate="one_to_one")
    lumas = []
    for rel in table["path"]:
        try:
            with Image.open(demo.frames_dir / rel) as im:
                lumas.append(float(np.asarray(im.convert("L"), np.float32).mean()))
        except OSError:
            lumas.append(None)
    table["luma"] = lumas
    return table


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_files_whatever_the_workers(tmp_path):
    one = render_demo(tmp_path / "a", n_frames=40, seed=3, size=(96, 54), progress=False, workers=1)
    two = render_demo(tmp_path / "b", n_frames=40, seed=3, size=(96, 54), progress=False, workers=2)
    files_one, files_two = _files(one.out_dir), _files(two.out_dir)
    assert len([p for p in files_one if p.endswith(".jpg")]) == 40
    assert files_one == files_two
    for rel in files_one:
        assert os.stat(one.out_dir / rel).st_mtime == os.stat(two.out_dir / rel).st_mtime
    other = render_demo(tmp_path / "c", n_frames=40, seed=4, size=(96, 54), progress=False)
    assert _files(other.out_dir) != files_one


def test_rerender_in_place_is_unchanged_and_drops_stale_frames(tmp_path):
    first = render_demo(tmp_path, n_frames=30, seed=5, size=(96, 54), progress=False)
    before = {
        rel: (data, os.stat(tmp_path / rel).st_mtime) for rel, data in _files(tmp_path).items()
    }
    render_demo(tmp_path, n_frames=30, seed=5, size=(96, 54), progress=False)
    after = {
        rel: (data, os.stat(tmp_path / rel).st_mtime) for rel, data in _files(tmp_path).items()
    }
    assert after == before
    shorter = render_demo(tmp_path, n_frames=20, seed=5, size=(96, 54), progress=False)
    jpegs = sorted(
        p.relative_to(first.frames_dir).as_posix() for p in first.frames_dir.rglob("*.jpg")
    )
    assert jpegs == sorted(pd.read_csv(shorter.truth_csv)["path"])
    assert len(jpegs) == 20


def test_frame_time_mtime_and_exif_agree_with_the_file_name(demo, frames):
    tz = DEMO_PLACE.tzinfo
    for rel, local_text in zip(frames["path"], frames["taken_at_local"]):
        path = demo.frames_dir / rel
        local = datetime.strptime(local_text, "%Y-%m-%d %H:%M:%S")
        assert rel == f"{local:%Y/%m/%d}/garden_{local:%Y%m%d_%H%M%S}.jpg"
        assert os.stat(path).st_mtime == local.replace(tzinfo=tz).timestamp()
    readable = frames[frames["kind"] != "truncated"]
    for rel in readable["path"]:
        with Image.open(demo.frames_dir / rel) as im:
            exif = im.getexif()
            sub = exif.get_ifd(0x8769)
        stamp = datetime.strptime(sub[0x9003], "%Y:%m:%d %H:%M:%S")
        assert Path(rel).name == f"garden_{stamp:%Y%m%d_%H%M%S}.jpg"
        assert 0x9011 not in sub  # no OffsetTimeOriginal, like a cheap camera
        assert exif[0x010F] == "GardenCam" and exif[0x0110]
        assert im.size == SIZE


def test_intervals_are_irregular_within_the_bounds(frames):
    times = pd.to_datetime(frames["taken_at_utc"]).sort_values()
    steps = times.diff().dropna().dt.total_seconds() / 60
    assert steps.between(10, 15).all()
    assert steps.nunique() > 10


def test_ground_truth_covers_every_file_and_every_kind(demo, frames):
    on_disk = sorted(
        p.relative_to(demo.frames_dir).as_posix() for p in demo.frames_dir.rglob("*.jpg")
    )
    assert on_disk == sorted(frames["path"])
    assert set(frames["kind"]) == set(KINDS) | {"normal"}
    assert ((frames["kind"] != "normal") == (frames["label"] == 1)).all()
    assert set(frames["label"]) == {0, 1}
    visual = frames[~frames["kind"].isin(["normal", "truncated"])]
    assert (visual["sun_elevation"] > anomalies.DAYLIGHT).all()
    assert demo.anomalies == dict(Counter(frames.loc[frames.label == 1, "kind"]))
    text = demo.describe()
    assert f"{N_FRAMES} frames" in text and "person" in text and str(demo.truth_csv) in text


def test_truncated_files_fail_to_load_and_the_others_load(demo, frames):
    truncated = frames[frames["kind"] == "truncated"]
    assert len(truncated) >= 1
    assert truncated["luma"].isna().all()
    for rel in truncated["path"]:
        with pytest.raises(OSError):
            with Image.open(demo.frames_dir / rel) as im:
                im.load()
    assert frames.loc[frames["kind"] != "truncated", "luma"].notna().all()


def test_night_frames_are_dark_and_midday_frames_bright(frames):
    normal = frames[frames["kind"] == "normal"]
    night = normal[normal["sun_elevation"] < -12]
    day = normal[(normal["sun_elevation"] > 30) & normal["condition"].isin(["clear", "cloudy"])]
    assert len(night) >= 10 and len(day) >= 5
    assert night["luma"].max() < 40
    assert day["luma"].min() > 80
    assert day["luma"].mean() - night["luma"].mean() > 70


def test_anomalies_look_different_from_their_neighbours(frames):
    ordered = frames.sort_values("taken_at_utc").reset_index(drop=True)
    luma = ordered["luma"]
    black = ordered.index[ordered["kind"] == "black"]
    washed = ordered.index[ordered["kind"] == "washed_out"]
    assert all(luma[i] < 10 for i in black)
    assert all(luma[i] > 200 for i in washed)


def test_weather_csv_is_open_meteo_layout_and_covers_the_frames(demo, frames):
    lines = demo.weather_csv.read_text(encoding="utf-8").splitlines()
    assert (
        lines[0] == "latitude,longitude,elevation,utc_offset_seconds,timezone,timezone_abbreviation"
    )
    assert lines[1].endswith(",0,GMT,GMT") and lines[2] == ""
    assert lines[3] == (
        "time,temperature_2m (°C),precipitation (mm),weather_code (wmo code),"
        "cloud_cover (%),wind_speed_10m (km/h)"
    )
    hourly = pd.read_csv(demo.weather_csv, skiprows=3)
    hourly["time"] = pd.to_datetime(hourly["time"], format="%Y-%m-%dT%H:%M")
    assert (hourly["time"].diff().dropna() == pd.Timedelta(hours=1)).all()
    taken = pd.to_datetime(frames["taken_at_utc"])
    assert hourly["time"].min() <= taken.min() and hourly["time"].max() >= taken.max()
    assert hourly["cloud_cover (%)"].between(0, 100).all()
    assert hourly["temperature_2m (°C)"].between(-10, 35).all()


def test_each_frame_shows_the_weather_of_its_hour(demo, frames):
    hourly = pd.read_csv(demo.weather_csv, skiprows=3)
    hourly["time"] = pd.to_datetime(hourly["time"], format="%Y-%m-%dT%H:%M")
    joined = pd.merge_asof(
        frames.assign(t=pd.to_datetime(frames["taken_at_utc"])).sort_values("t"),
        hourly,
        left_on="t",
        right_on="time",
    )
    assert joined["time"].notna().all()
    assert (joined["t"] - joined["time"] < pd.Timedelta(hours=1)).all()
    codes = joined["weather_code (wmo code)"]
    rain = joined["condition"] == "rain"
    assert rain.any(), "the test render should include rain"
    assert (joined.loc[rain, "precipitation (mm)"] > 0).all()
    assert codes[rain].isin([61, 63]).all()
    assert (joined.loc[~rain & (joined["condition"] != "snow"), "precipitation (mm)"] == 0).all()
    assert codes[joined["condition"] == "fog"].eq(45).all()
    assert codes[joined["condition"] == "clear"].isin([0, 1]).all()
    assert codes[joined["condition"] == "cloudy"].isin([2, 3]).all()
    assert (joined["condition"] == "fog").any()
    # The dense-fog anomaly sits inside a foggy hour.
    assert (joined.loc[joined["kind"] == "fog", "condition"] == "fog").all()


def test_rain_frames_are_wet_and_streaked(frames, demo):
    day = frames[(frames["kind"] == "normal") & (frames["sun_elevation"] > 10)]
    rain = day[day["condition"] == "rain"]
    dry = day[day["condition"].isin(["clear"])]
    if rain.empty or dry.empty:
        pytest.skip("this seed has no daylight rain next to clear frames")

    def saturation(rel):
        with Image.open(demo.frames_dir / rel) as im:
            return float(np.asarray(im.convert("HSV"), np.float32)[..., 1].mean())

    assert np.mean([saturation(r) for r in rain["path"]]) < np.mean(
        [saturation(r) for r in dry["path"]]
    )


@pytest.mark.parametrize("hard", [False, True])
def test_default_length_plan_is_rare_and_hard_is_shorter(hard):
    rng = np.random.default_rng(11)
    clocks = timeline.frame_clocks(1200, rng, DEMO_PLACE)
    weather = generate_weather(clocks[0].utc, clocks[-1].utc, DEMO_PLACE, rng)
    events = anomalies.plan_anomalies(clocks, weather, rng, hard=hard)
    kinds = Counter(e.kind for e in events if e is not None)
    assert set(kinds) == set(KINDS)
    assert 0.025 <= sum(kinds.values()) / len(events) <= 0.06
    longest = _longest_runs(events)
    assert longest["knocked"] <= (4 if hard else 12)
    assert longest["knocked"] >= (2 if hard else 6)
    span = clocks[-1].utc - clocks[0].utc
    assert timedelta(days=8) < span < timedelta(days=13)


def _longest_runs(events) -> dict[str, int]:
    longest: dict[str, int] = {}
    run, prev = 0, None
    for e in events:
        kind = e.kind if e is not None else None
        run = run + 1 if kind == prev else 1
        prev = kind
        if kind:
            longest[kind] = max(longest.get(kind, 0), run)
    return longest


def test_hard_anomalies_are_smaller_and_fainter():
    cam_size = (640, 360)
    from pipeline.demo.scene import Camera

    cam = Camera(*cam_size)
    sizes = {}
    for hard in (False, True):
        rng = np.random.default_rng(1)
        person = [anomalies._frame_params("person", rng, hard) for _ in range(20)]
        sizes[hard] = max(
            anomalies.person_sprite(cam, {**anomalies._event_params("person", rng, hard), **p})[
                3
            ].shape[0]
            for p in person
        )
    assert sizes[True] < sizes[False] * 0.75
    rng = np.random.default_rng(2)
    assert (
        anomalies._event_params("fog", rng, True)["density"]
        < anomalies._event_params("fog", rng, False)["density"]
    )


def test_sun_path_is_real_for_the_place():
    rng = np.random.default_rng(0)
    clocks = timeline.frame_clocks(140, rng, DEMO_PLACE)
    noon = max(clocks, key=lambda c: c.sun_elevation)
    # Early April in southern England: the sun peaks near 43-45 degrees a little after 13:00 BST.
    assert 41 < noon.sun_elevation < 47
    assert 12 <= noon.local.hour <= 14
    assert 150 < noon.sun_azimuth < 210
    assert min(c.sun_elevation for c in clocks) < -25
    assert DEMO_PLACE.timezone == "Europe/London"
    assert clocks[0].utc.tzinfo == timezone.utc


def test_bad_arguments_are_input_errors(tmp_path):
    for n in (0, 10**14):
        with pytest.raises(InputError, match="the demo renders 1 to 100,000 frames"):
            render_demo(tmp_path, n_frames=n, progress=False)
    with pytest.raises(InputError, match="size"):
        render_demo(tmp_path, n_frames=5, size=(10, 10), progress=False)
    with pytest.raises(InputError, match="interval"):
        render_demo(tmp_path, n_frames=5, interval_minutes=(15, 10), progress=False)


def test_cli_demo_rejects_a_bad_size_in_one_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(
        cli, ["demo", "--out", str(tmp_path), "--size", "big", "--no-serve"]
    )
    assert result.exit_code == 1
    assert "--size must look like 640x360" in result.output
    tiny = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--size", "8x8", "--no-serve"])
    assert tiny.exit_code == 1 and "between 32x24" in tiny.output
    assert "Traceback" not in result.output + tiny.output


@pytest.mark.parametrize(
    "args, config, message",
    [
        (["--junk-causes", "nope"], None, "error: setting junk_causes: unknown cause(s) nope"),
        (["--model", "nosuch"], None, "error: unknown model 'nosuch'"),
        ([], "detectors = ['nosuch']", "error: unknown detector(s) nosuch"),
    ],
)
def test_cli_demo_checks_its_settings_before_rendering(tmp_path, args, config, message):
    """A bad setting is refused at once, not after the frames are rendered (minutes)."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    before = []
    if config is not None:
        (tmp_path / "s.toml").write_text(config + "\n")
        before = ["--config", str(tmp_path / "s.toml")]
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        cli, [*before, "demo", "--frames", "20", "--out", str(out), "--no-serve", *args]
    )
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # no frame rendered, no folder made
