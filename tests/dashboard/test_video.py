"""The MP4 download of Review & export and the CLI it runs: the page's filter and export mode
become `python -m pipeline export` flags that select exactly the frames the dashboard exports
(compared with `store.facts.export_frames` on the real demo store, reviews included); the page's
video controls make a real MP4, and a failing export shows the CLI's one-line error."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import av
import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

import store
from dashboard.video import command_line, export_args
from pipeline.cli import cli
from pipeline.export import FilterFlags, build_filter
from store import facts, reviews
from store.export import export_concat, export_csv, file_path
from store.facts import FrameFilter
from tests.conftest import REPO, write_jpeg

APP = str(REPO / "dashboard" / "app.py")


def views(con) -> list[tuple[FrameFilter, str]]:
    """Filters a user can set on the demo store (every filter key at least once), each with an
    export mode."""
    opts = facts.options(con)
    run = opts["run_id"]
    base = FrameFilter(run_id=run, detector=opts["detectors"][0])
    day = opts["date_min"]
    return [
        (base, "not_junk"),
        (
            base.replace(
                daylight=("day",),
                hour_from=6,
                hour_to=18,
                detector="iforest",
                threshold_kind="flagged",
            ),
            "not_junk",
        ),
        (
            base.replace(
                date_from=day,
                date_to=day + timedelta(days=1),
                conditions=tuple(opts["conditions"][:2]),
                clusters=tuple(opts["clusters"][:3]),
            ),
            "keep",
        ),
        (base.replace(detector="background", threshold_kind="pct", threshold=80.0), "clean"),
        (base.replace(threshold_kind="topk", threshold=20.0, hour_from=20, hour_to=5), "not_junk"),
        (base.replace(daylight=("day", "twilight")), "clean"),
    ]


@pytest.fixture(scope="module")
def reviewed(demo_store, tmp_path_factory) -> Path:
    """A copy of the demo store with some frames marked junk and some keep: of the consensus's
    highest-scoring (flagged) frames, three junk, two keep (which 'clean' keeps) and the rest
    unreviewed."""
    db = tmp_path_factory.mktemp("reviewed") / "garden.duckdb"
    db.write_bytes(demo_store.read_bytes())
    with store.connect(db) as con:
        ids = [
            int(r[0])
            for r in con.execute(
                "SELECT frame_id FROM outlier_scores WHERE detector = 'consensus' "
                "AND run_id = (SELECT run_id FROM latest_run) ORDER BY score DESC"
            ).fetchall()
        ]
        reviews.set_verdicts(con, ids[:3] + ids[-10:-4], "junk")
        reviews.set_verdicts(con, ids[3:5] + ids[-4:], "keep")
    return db


def cli_export(db: Path, *args: str):
    result = CliRunner().invoke(cli, ["export", "--db", str(db), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return result


def test_the_flags_describe_exactly_the_pages_filter(reviewed):
    """`export_args` -> the CLI's own option parsing -> `build_filter` gives the filter back."""
    command = cli.commands["export"]
    with store.connect(reviewed, read_only=True) as con:
        for flt, mode in views(con):
            args = export_args(flt, mode)
            ctx = command.make_context("export", ["--db", str(reviewed), "--out", "x.mp4", *args])
            p = ctx.params
            flags = FilterFlags(
                run=p["run"],
                date_from=p["date_from"] and p["date_from"].date(),
                date_to=p["date_to"] and p["date_to"].date(),
                hours=p["hours"],
                daylight=p["daylight"],
                weather=p["weather"],
                cluster=p["cluster"],
                det=p["det"],
                thr=p["thr"],
            )
            assert build_filter(con, flags) == flt, args
            assert p["mode"] == mode


def test_the_cli_exports_the_frames_the_dashboard_exports(reviewed, tmp_path):
    with store.connect(reviewed, read_only=True) as con:
        cases = [(flt, mode, facts.export_frames(con, flt, mode)) for flt, mode in views(con)]
        counts = [facts.export_left_out(con, flt, mode) for flt, mode, _ in cases]
    sizes = set()
    for (flt, mode, expected), left in zip(cases, counts):
        listed = tmp_path / "frames.txt"
        result = cli_export(reviewed, "--out", str(listed), *export_args(flt, mode))
        assert listed.read_bytes().decode("utf-8", "surrogateescape").splitlines() == [
            file_path(p) for p in expected["abs_path"]
        ], (flt, mode)
        assert result.output.startswith(f"exported {len(expected):,} of ")
        assert left["exported"] == len(expected)
        assert sum(v for k, v in left.items() if k != "n_frames") == left["n_frames"]
        sizes.add(len(expected))
    assert len(sizes) >= 4 and 0 not in sizes  # the cases select different frames
    flt, mode, expected = cases[2]  # the dashboard's CSV, byte for byte
    out = tmp_path / "frames.csv"
    cli_export(reviewed, "--out", str(out), *export_args(flt, mode))
    assert out.read_bytes() == export_csv(expected).encode("utf-8")
    out = tmp_path / "frames.ffconcat"
    cli_export(reviewed, "--out", str(out), "--fps", "12", *export_args(flt, mode))
    body = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert body == [
        line
        for line in export_concat(expected["abs_path"], 12).splitlines()
        if not line.startswith("#")
    ]


def test_review_modes_leave_out_what_they_say(reviewed):
    with store.connect(reviewed, read_only=True) as con:
        flt = FrameFilter(run_id=facts.latest_run_id(con))
        verdicts = con.execute("SELECT verdict, count(*) FROM reviews GROUP BY ALL").fetchall()
        n_flagged_open = con.execute(
            "SELECT count(*) FROM outlier_scores s LEFT JOIN reviews r USING (frame_id) "
            "WHERE s.run_id = $run AND s.detector = 'consensus' AND s.is_outlier "
            "AND r.verdict IS NULL",
            {"run": flt.run_id},
        ).fetchone()[0]
        n_junk, n_keep = dict(verdicts)["junk"], dict(verdicts)["keep"]
        n_all = facts.export_left_out(con, flt)["n_frames"]
        not_junk = facts.export_left_out(con, flt, "not_junk")
        keep = facts.export_left_out(con, flt, "keep")
        clean = facts.export_left_out(con, flt, "clean")
        clean_rows = facts.export_frames(con, flt, "clean")
    assert n_flagged_open > 0
    assert (not_junk["junk"], not_junk["exported"]) == (n_junk, n_all - n_junk)
    assert (keep["junk"], keep["not_keep"], keep["exported"]) == (
        n_junk,
        n_all - n_junk - n_keep,
        n_keep,
    )
    assert (clean["junk"], clean["flagged"]) == (n_junk, n_flagged_open)
    assert clean["exported"] == len(clean_rows) == n_all - n_junk - n_flagged_open
    assert (clean_rows["verdict"] == "keep").sum() == n_keep


def test_command_line_is_the_same_export_to_run_by_hand(demo_store):
    flt = FrameFilter(run_id=1, daylight=("day",), threshold_kind="topk", threshold=5)
    line = command_line(demo_store, flt, "clean", 12, 640, True)
    assert line == (
        f"python -m pipeline export --db {demo_store} --format mp4 --out "
        "timelapse.mp4 --fps 12 --width 640 --deflicker --frames clean --run=1 "
        "--daylight=day --det=consensus --thr=top5"
    )
    with pytest.raises(ValueError, match="selection"):
        export_args(flt.replace(frame_ids=(1, 2)), "not_junk")


def _page(db: Path, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_review_page_makes_the_mp4_of_the_view(demo_store, monkeypatch):
    at = _page(demo_store, monkeypatch, daylight="day")
    widths = ["the frames' own (at most 1280)", "640", "960", "1280", "1920", "2560", "3840"]
    assert at.selectbox(key="video_width").options == widths
    assert at.selectbox(key="video_width").value is None
    assert at.toggle(key="video_deflicker").value is False
    assert [b.label for b in at.get("download_button")] == [
        "File list (.txt)",
        "CSV",
        "ffmpeg concat",
    ]
    at.selectbox(key="video_width").set_value(640)
    at.toggle(key="video_deflicker").set_value(True)
    at.number_input(key="export_fps").set_value(12)
    at.button(key="video_make").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [b.label for b in at.get("download_button")][-1] == "MP4 video"
    with store.connect(demo_store, read_only=True) as con:
        flt = FrameFilter(run_id=facts.latest_run_id(con), daylight=("day",))
        n_day = facts.export_count(con, flt)
    summary = next(c.value for c in at.caption if c.value.startswith("exported"))
    assert summary.startswith(f"exported {n_day:,} of ")
    assert "640x360, 12 fps" in summary and "deflicker over 15 frames" in summary
    assert "timelapse\\.mp4" in summary and "/tmp" not in summary
    # another setting: the made video no longer matches the view, the button is back
    at.toggle(key="video_deflicker").set_value(False).run()
    assert [b.label for b in at.get("download_button")][-1] == "ffmpeg concat"
    assert at.button(key="video_make").label == "Make MP4 video"


def test_a_failed_video_shows_the_clis_one_line_error(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    for i in range(3):
        write_jpeg(folder / f"cam_2024050{i + 1}_120000.jpg", seed=i)
    db = tmp_path / "gone.duckdb"
    from pipeline.ingest import ingest_folder
    from pipeline.settings import Settings

    ingest_folder(folder, db, Settings(workers=1), progress=False)
    for path in folder.glob("*.jpg"):
        os.remove(path)
    at = _page(db, monkeypatch)
    at.button(key="video_make").click().run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(
        "No video: no video written: none of the 3 frames could be read "
        f"(first: {folder}/cam_20240501_120000.jpg (the file disappeared"
    )
    assert "MP4 video" not in [b.label for b in at.get("download_button")]


def test_the_mp4_has_every_exported_frame(reviewed, tmp_path):
    """The same export as the page's, as an MP4 decoded back: one frame per exported frame."""
    with store.connect(reviewed, read_only=True) as con:
        flt, mode = views(con)[1]
        n = len(facts.export_frames(con, flt, mode))
    out = tmp_path / "v.mp4"
    cli_export(reviewed, "--out", str(out), "--width", "160", *export_args(flt, mode))
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == n
