"""store.frames: bulk writes read back equal; changed frames keep ids; summaries of empty stores."""

from __future__ import annotations

import pandas as pd
import pytest

import store
from store import frames as frames_store


def _frame_rows(ids, paths, luma=50.0) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({
        "frame_id": pd.Series(ids, dtype="int64"),
        "path": pd.Series(paths, dtype=object),
        "root": "/data/cam",
        "taken_at": pd.Series(pd.date_range("2024-04-01 12:00", periods=n, freq="10min"),
                              dtype="datetime64[us]"),
        "taken_at_utc": pd.Series(pd.date_range("2024-04-01 10:00", periods=n, freq="10min",
                                                tz="UTC"), dtype="datetime64[us, UTC]"),
        "time_source": "exif",
        "utc_offset_min": pd.array([120] * n, dtype="Int32"),
        "source_utc": pd.Series([pd.NaT] * n, dtype="datetime64[us, UTC]"),
        "width": 64, "height": 48,
        "file_bytes": pd.Series(range(100, 100 + n), dtype="int64"),
        "file_mtime": pd.Series(pd.date_range("2024-04-02", periods=n, freq="s", tz="UTC"),
                                dtype="datetime64[us, UTC]"),
        "content_hash": [f"h{i}" for i in ids],
        "mean_luma": luma, "contrast": 10.0, "sharpness": 5.0, "colorfulness": 20.0,
        "sun_elevation": 30.0, "daylight": "day", "daylight_source": "sun",
    })


def _thumbs(ids) -> pd.DataFrame:
    return pd.DataFrame({"frame_id": pd.Series(ids, dtype="int64"),
                         "jpeg": [b"\xff\xd8jpeg" + bytes([i]) for i in ids],
                         "width": 64, "height": 48})


def _no_errors() -> pd.DataFrame:
    return pd.DataFrame({"path": pd.Series([], dtype=object), "stage": [], "message": [],
                         "root": [], "file_bytes": pd.array([], dtype="Int64"),
                         "file_mtime": pd.Series([], dtype="datetime64[us, UTC]")})


def _empty() -> pd.DataFrame:
    return _frame_rows([], [])


def test_written_rows_read_back_equal(db_path):
    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 3)
        assert ids == [1, 2, 3]
        rows = _frame_rows(ids, ["a/1.jpg", "a/2.jpg", "b/3.jpg"])
        frames_store.write_batch(con, rows, _empty(), _thumbs(ids), _no_errors(), [], [])
        back = con.sql("SELECT frame_id, path, taken_at_utc, utc_offset_min, file_bytes, "
                       "daylight FROM frames ORDER BY frame_id").df()
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
        assert known["mtime_us"].min() == pd.Timestamp("2024-04-02", tz="UTC").value // 1000


def test_changed_frame_keeps_its_id_and_loses_vectors_and_old_thumbnail(db_path):
    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, 2)
        frames_store.write_batch(con, _frame_rows(ids, ["x.jpg", "y.jpg"]), _empty(),
                                 _thumbs(ids), _no_errors(), [], [])
        con.execute("INSERT INTO embeddings VALUES (1, 'pixels', [1.0]), (2, 'pixels', [2.0])")
        changed = _frame_rows([1], ["x.jpg"], luma=200.0)
        thumb = _thumbs([1])
        thumb["jpeg"] = [b"new"]
        frames_store.write_batch(con, _empty(), changed, thumb, _no_errors(), [], [])
        rows = con.sql("SELECT frame_id, mean_luma FROM frames ORDER BY frame_id").fetchall()
        assert rows == [(1, 200.0), (2, 50.0)]
        assert con.sql("SELECT frame_id FROM embeddings").fetchall() == [(2,)]
        assert bytes(frames_store.thumbnails(con, [1])["jpeg"][0]) == b"new"


def test_errors_are_upserted_and_cleared(db_path):
    errors = pd.DataFrame({
        "path": ["bad.jpg", "odd.jpg"], "stage": ["ingest", "timestamp"],
        "message": ["truncated image", "warning: bad date"], "root": "/data",
        "file_bytes": pd.array([10, 20], dtype="Int64"),
        "file_mtime": pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                                dtype="datetime64[us, UTC]"),
    })
    with store.connect(db_path) as con:
        frames_store.write_batch(con, _empty(), _empty(), _thumbs([]), errors, [], [])
        again = errors.iloc[:1].copy()
        again["message"] = "still truncated"
        frames_store.write_batch(con, _empty(), _empty(), _thumbs([]), again, [], [])
        assert con.sql("SELECT path, message FROM ingest_errors ORDER BY path").fetchall() == [
            ("bad.jpg", "still truncated"), ("odd.jpg", "warning: bad date")]
        failed = frames_store.failed_files(con, "ingest")
        assert list(failed["path"]) == ["bad.jpg"] and list(failed["file_bytes"]) == [10]
        frames_store.write_batch(con, _empty(), _empty(), _thumbs([]), _no_errors(),
                                 ["bad.jpg", "odd.jpg"], ["ingest", "timestamp"])
        assert con.sql("SELECT count(*) FROM ingest_errors").fetchall() == [(0,)]


def test_a_failed_batch_leaves_nothing(db_path):
    with store.connect(db_path) as con:
        rows = _frame_rows([1, 1], ["dup.jpg", "dup2.jpg"])  # duplicate frame_id
        with pytest.raises(Exception):
            frames_store.write_batch(con, rows, _empty(), _thumbs([7]), _no_errors(), [], [])
        assert con.sql("SELECT count(*) FROM frames").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM thumbnails").fetchall() == [(0,)]


def test_update_times_and_time_inputs(db_path):
    with store.connect(db_path) as con:
        frames_store.write_batch(con, _frame_rows([1, 2], ["a", "b"]), _empty(), _thumbs([]),
                                 _no_errors(), [], [])
        inputs = frames_store.time_inputs(con)
        assert list(inputs.columns) == ["frame_id", "taken_at", "source_utc", "time_source",
                                        "mean_luma"]
        times = _frame_rows([1, 2], ["a", "b"])
        times["daylight"] = ["night", "twilight"]
        times["sun_elevation"] = [-20.0, -3.0]
        frames_store.update_times(con, times)
        assert con.sql("SELECT daylight, sun_elevation FROM frames ORDER BY frame_id"
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
