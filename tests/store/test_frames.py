"""store.frames: bulk writes read back equal; changed frames keep ids and lose what judged their
old pixels; moved frames follow their file; summaries of empty stores."""

from __future__ import annotations

import pandas as pd
import pytest

import store
from store import frames as frames_store


def _frame_rows(ids, paths, luma=50.0) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "frame_id": pd.Series(ids, dtype="int64"),
            "path": pd.Series(paths, dtype=object),
            "root": "/data/cam",
            "location": pd.Series([f"/data/cam/{p}" for p in paths], dtype=object),
            "taken_at": pd.Series(
                pd.date_range("2024-04-01 12:00", periods=n, freq="10min"), dtype="datetime64[us]"
            ),
            "taken_at_utc": pd.Series(
                pd.date_range("2024-04-01 10:00", periods=n, freq="10min", tz="UTC"),
                dtype="datetime64[us, UTC]",
            ),
            "time_source": "exif",
            "utc_offset_min": pd.array([120] * n, dtype="Int32"),
            "source_utc": pd.Series([pd.NaT] * n, dtype="datetime64[us, UTC]"),
            "width": 64,
            "height": 48,
            "file_bytes": pd.Series(range(100, 100 + n), dtype="int64"),
            "file_mtime": pd.Series(
                pd.date_range("2024-04-02", periods=n, freq="s", tz="UTC"),
                dtype="datetime64[us, UTC]",
            ),
            "content_hash": [f"h{i}" for i in ids],
            "mean_luma": luma,
            "contrast": 10.0,
            "sharpness": 5.0,
            "colorfulness": 20.0,
            "sun_elevation": 30.0,
            "daylight": "day",
            "daylight_source": "sun",
        }
    )


def _thumbs(ids) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame_id": pd.Series(ids, dtype="int64"),
            "jpeg": [b"\xff\xd8jpeg" + bytes([i]) for i in ids],
            "width": 64,
            "height": 48,
        }
    )


def _no_errors() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": pd.Series([], dtype=object),
            "location": pd.Series([], dtype=object),
            "stage": [],
            "message": [],
            "root": [],
            "file_bytes": pd.array([], dtype="Int64"),
            "file_mtime": pd.Series([], dtype="datetime64[us, UTC]"),
        }
    )


def _empty() -> pd.DataFrame:
    return _frame_rows([], [])


def _write(
    con, new=None, changed=None, reread=None, thumbs=None, errors=None, cleared=(), stages=()
) -> int:
    return frames_store.write_batch(
        con,
        frames_store.FrameBatch(
            _empty() if new is None else new,
            _empty() if changed is None else changed,
            _empty() if reread is None else reread,
            _thumbs([]) if thumbs is None else thumbs,
            _no_errors() if errors is None else errors,
            list(cleared),
            list(stages),
        ),
    )


def test_written_rows_read_back_equal(db_path):
    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 3)
        assert ids == [1, 2, 3]
        rows = _frame_rows(ids, ["a/1.jpg", "a/2.jpg", "b/3.jpg"])
        _write(con, new=rows, thumbs=_thumbs(ids))
        back = con.sql(
            "SELECT frame_id, path, taken_at_utc, utc_offset_min, file_bytes, "
            "daylight FROM frames ORDER BY frame_id"
        ).df()
        assert list(back["path"]) == ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
        assert list(back["utc_offset_min"]) == [120] * 3
        assert list(back["taken_at_utc"].dt.strftime("%H:%M")) == ["10:00", "10:10", "10:20"]
        listed = frames_store.list_frames(con, [3, 1])
        assert list(listed["frame_id"]) == [1, 3] and list(listed["root"]) == ["/data/cam"] * 2
        assert len(frames_store.list_frames(con)) == 3
        thumbs = frames_store.thumbnails(con, [2])
        assert bytes(thumbs["jpeg"][0]) == b"\xff\xd8jpeg\x02"
        known = frames_store.known_files(con)
        assert set(known["path"]) == {"a/1.jpg", "a/2.jpg", "b/3.jpg"}
        assert set(known["location"]) == {
            "/data/cam/a/1.jpg",
            "/data/cam/a/2.jpg",
            "/data/cam/b/3.jpg",
        }
        assert known["mtime_us"].min() == pd.Timestamp("2024-04-02", tz="UTC").value // 1000


def test_changed_frame_keeps_its_id_and_loses_what_judged_its_old_pixels(db_path):
    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 2)
        _write(con, new=_frame_rows(ids, ["x.jpg", "y.jpg"]), thumbs=_thumbs(ids))
        con.execute(
            "INSERT INTO embeddings (frame_id, model, vector) "
            "VALUES (1, 'pixels', [1.0]), (2, 'pixels', [2.0])"
        )
        con.execute(
            "INSERT INTO reviews (frame_id, verdict, note) VALUES (1, 'junk', 'a fox'), "
            "(2, 'keep', NULL)"
        )
        for run in (1, 2):
            con.execute(f"INSERT INTO clusters VALUES ({run}, 1, 0, 0, 0), ({run}, 2, 0, 1, 1)")
            con.execute(
                f"INSERT INTO outlier_scores VALUES ({run}, 'lof', 1, 2.0, 0.9, true), "
                f"({run}, 'lof', 2, 1.0, 0.1, false)"
            )
            con.execute(
                f"INSERT INTO neighbors VALUES ({run}, 1, 1, 2, 0.5), ({run}, 2, 1, 1, 0.5)"
            )
            con.execute(
                f"INSERT INTO frame_cause_evidence VALUES ({run}, 1, 'quality', 'blur', 2.0), "
                f"({run}, 2, 'scene', 'something in the scene', 1.0)"
            )
        changed = _frame_rows([1], ["x.jpg"], luma=200.0)
        thumb = _thumbs([1])
        thumb["jpeg"] = [b"new"]
        assert _write(con, changed=changed, thumbs=thumb) == 1
        rows = con.sql("SELECT frame_id, mean_luma FROM frames ORDER BY frame_id").fetchall()
        assert rows == [(1, 200.0), (2, 50.0)]
        assert con.sql("SELECT frame_id FROM embeddings").fetchall() == [(2,)]
        assert bytes(frames_store.thumbnails(con, [1])["jpeg"][0]) == b"new"
        assert con.sql("SELECT frame_id, verdict FROM reviews").fetchall() == [(2, "keep")]
        for table in ("clusters", "outlier_scores", "frame_cause_evidence"):
            assert con.sql(f"SELECT DISTINCT frame_id FROM {table}").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM neighbors").fetchall() == [(0,)]
        ((stage, path, message),) = con.sql(
            "SELECT stage, path, message FROM ingest_errors"
        ).fetchall()
        assert (stage, path) == ("changed", "x.jpg")
        assert "its review 'junk' of " in message and "(note: a fox)" in message
        assert "scores in 2 earlier run(s) were removed" in message


def test_reread_frame_only_updates_its_row(db_path):
    with store.connect(db_path) as con:
        _write(con, new=_frame_rows([1], ["x.jpg"]), thumbs=_thumbs([1]))
        con.execute("INSERT INTO embeddings (frame_id, model, vector) VALUES (1, 'pixels', [1.0])")
        con.execute("INSERT INTO reviews (frame_id, verdict) VALUES (1, 'junk')")
        again = _frame_rows([1], ["x.jpg"])
        again["file_mtime"] = pd.Series(
            pd.to_datetime(["2025-01-01"], utc=True), dtype="datetime64[us, UTC]"
        )
        assert _write(con, reread=again) == 0
        assert con.sql("SELECT year(file_mtime) FROM frames").fetchall() == [(2025,)]
        assert con.sql("SELECT count(*) FROM embeddings").fetchall() == [(1,)]
        assert con.sql("SELECT verdict FROM reviews").fetchall() == [("junk",)]
        assert con.sql("SELECT count(*) FROM ingest_errors").fetchall() == [(0,)]


def test_relocate_moves_root_path_and_location_only(db_path):
    with store.connect(db_path) as con:
        _write(con, new=_frame_rows([1, 2], ["a/x.jpg", "a/y.jpg"]))
        frames_store.relocate(
            con,
            pd.DataFrame(
                {
                    "frame_id": [2],
                    "root": ["/nas"],
                    "path": ["cam/a/y.jpg"],
                    "location": ["/nas/cam/a/y.jpg"],
                }
            ),
        )
        assert con.sql(
            "SELECT frame_id, root, path, location, mean_luma FROM frames ORDER BY frame_id"
        ).fetchall() == [
            (1, "/data/cam", "a/x.jpg", "/data/cam/a/x.jpg", 50.0),
            (2, "/nas", "cam/a/y.jpg", "/nas/cam/a/y.jpg", 50.0),
        ]


def test_two_frames_may_share_a_relative_path_but_not_a_location(db_path):
    with store.connect(db_path) as con:
        first = _frame_rows([1], ["IMG_0001.jpg"])
        second = _frame_rows([2], ["IMG_0001.jpg"])
        second["root"], second["location"] = "/data/cardB", "/data/cardB/IMG_0001.jpg"
        _write(con, new=first)
        _write(con, new=second)
        assert con.sql("SELECT count(*) FROM frames").fetchall() == [(2,)]
        with pytest.raises(Exception, match="(?i)constraint"):
            _write(con, new=_frame_rows([3], ["IMG_0001.jpg"]))


def test_errors_are_upserted_and_cleared(db_path):
    errors = pd.DataFrame(
        {
            "path": ["bad.jpg", "odd.jpg"],
            "location": ["/data/bad.jpg", "/data/odd.jpg"],
            "stage": ["ingest", "timestamp"],
            "message": ["truncated image", "warning: bad date"],
            "root": "/data",
            "file_bytes": pd.array([10, 20], dtype="Int64"),
            "file_mtime": pd.Series(
                pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True), dtype="datetime64[us, UTC]"
            ),
        }
    )
    with store.connect(db_path) as con:
        _write(con, errors=errors)
        again = errors.iloc[:1].copy()
        again["message"] = "still truncated"
        _write(con, errors=again)
        assert con.sql("SELECT path, message FROM ingest_errors ORDER BY path").fetchall() == [
            ("bad.jpg", "still truncated"),
            ("odd.jpg", "warning: bad date"),
        ]
        failed = frames_store.failed_files(con, "ingest")
        assert list(failed["location"]) == ["/data/bad.jpg"]
        assert list(failed["file_bytes"]) == [10]
        _write(con, cleared=["/data/bad.jpg", "/data/odd.jpg"], stages=["ingest", "timestamp"])
        assert con.sql("SELECT count(*) FROM ingest_errors").fetchall() == [(0,)]


def test_a_failed_batch_leaves_nothing(db_path):
    with store.connect(db_path) as con:
        rows = _frame_rows([1, 1], ["dup.jpg", "dup2.jpg"])  # duplicate frame_id
        with pytest.raises(Exception):
            _write(con, new=rows, thumbs=_thumbs([7]))
        assert con.sql("SELECT count(*) FROM frames").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM thumbnails").fetchall() == [(0,)]


def test_update_times_and_time_inputs(db_path):
    with store.connect(db_path) as con:
        _write(con, new=_frame_rows([1, 2], ["a", "b"]))
        inputs = frames_store.time_inputs(con)
        assert list(inputs.columns) == [
            "frame_id",
            "taken_at",
            "source_utc",
            "time_source",
            "mean_luma",
        ]
        times = _frame_rows([1, 2], ["a", "b"])
        times["daylight"] = ["night", "twilight"]
        times["sun_elevation"] = [-20.0, -3.0]
        frames_store.update_times(con, times)
        assert con.sql(
            "SELECT daylight, sun_elevation FROM frames ORDER BY frame_id"
        ).fetchall() == [("night", -20.0), ("twilight", -3.0)]


def test_summaries_of_an_empty_store(db_path):
    with store.connect(db_path) as con:
        pass
    with store.connect(db_path, read_only=True) as con:
        summary = frames_store.frame_summary(con)
        assert summary["n_frames"] == 0 and summary["time_sources"] == {}
        assert frames_store.error_summary(con) == {}
        assert frames_store.model_summary(con) == []
        assert frames_store.run_summary(con) == (0, [])
        assert frames_store.weather_summary(con) == []
        assert frames_store.review_summary(con) == {}


def test_thumbnail_jpegs_are_unsigned_views_of_each_frames_bytes(db_path):
    """The pixel detectors' read: each wanted frame's JPEG (in frame order, frames without a
    thumbnail left out, an empty request empty) as a view of unsigned bytes, which simplejpeg
    decodes itself (signed ones it refuses, and the decoder would fall back to Pillow)."""
    import io

    import numpy as np
    import simplejpeg
    from PIL import Image

    def jpeg(value: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((48, 64, 3), value, np.uint8)).save(buf, "JPEG")
        return buf.getvalue()

    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 4)
        thumbs = _thumbs(ids[:3])
        thumbs["jpeg"] = [jpeg(40 * i) for i in ids[:3]]
        _write(con, new=_frame_rows(ids, [f"{i}.jpg" for i in ids]), thumbs=thumbs)
        got_ids, views = frames_store.thumbnail_jpegs(con, [ids[3], ids[2], ids[0]])
        assert got_ids.tolist() == [ids[0], ids[2]] and got_ids.dtype == np.int64
        assert [bytes(v) for v in views] == [jpeg(40 * ids[0]), jpeg(40 * ids[2])]
        assert all(v.format == "B" for v in views)
        grid = simplejpeg.decode_jpeg(views[1], colorspace="RGB")
        assert abs(int(grid.mean()) - 40 * ids[2]) <= 2
        empty_ids, empty = frames_store.thumbnail_jpegs(con, [])
        assert len(empty_ids) == 0 and empty == []
