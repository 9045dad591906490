"""dashboard.data: where the store comes from, the original-file lookup that never leaves the
frame's root, and the cache key that changes when the store is written."""

from __future__ import annotations

import os
from pathlib import Path

import store
from dashboard import data
from store import reviews


def test_db_path_from_flag_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_DB, str(tmp_path / "env.duckdb"))
    assert data.db_path(["--db", "flag.duckdb", "--other"]).name == "flag.duckdb"
    assert data.db_path([]) == tmp_path / "env.duckdb"
    monkeypatch.delenv(data.ENV_DB)
    assert data.db_path([]) is None


def test_original_path_stays_inside_root(tmp_path, make_jpeg):
    root = tmp_path / "frames"
    good = make_jpeg(root / "2024" / "a.jpg")
    secret = make_jpeg(tmp_path / "outside.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "link.jpg").symlink_to(secret)
    assert data.original_path(str(root), "2024/a.jpg") == good.resolve()
    assert data.original_path(str(root), "../outside.jpg") is None
    assert data.original_path(str(root), str(secret)) is None  # absolute path
    assert data.original_path(str(root), "link.jpg") is None  # symlink out of root
    assert data.original_path(str(root), "notes.txt") is None
    assert data.original_path(str(root), "missing.jpg") is None
    assert data.original_path(str(tmp_path / "gone"), "a.jpg") is None
    assert data.original_path(None, "a.jpg") is None


def test_original_file_with_a_name_that_is_not_utf8(tmp_path, make_jpeg):
    """Ingest stores such a name with `\\xNN` escapes; the lookup finds the real bytes."""
    root = tmp_path / "frames"
    real = Path(os.fsdecode(os.path.join(os.fsencode(root), b"caf\xe9.jpg")))
    make_jpeg(real)
    found = data.original_path(str(root), "caf\\xe9.jpg")
    assert found is not None and os.fsencode(found.name) == b"caf\xe9.jpg"
    assert data.original_bytes(str(root), "caf\\xe9.jpg") == real.read_bytes()
    assert data.original_path(str(root), "caf\\xe8.jpg") is None
    assert data.original_bytes(str(root), "missing.jpg") is None


def test_stamp_changes_when_the_store_is_written(store_copy):
    before = data.stamp(store_copy)
    with store.connect(store_copy) as con:
        fid = store.db.scalar(con, "SELECT min(frame_id) FROM frames")
        reviews.set_verdicts(con, [fid], "junk")
    assert data.stamp(store_copy) != before


def test_reader_reads_and_writes(store_copy):
    reader = data.Reader(store_copy, lock_wait_s=2)
    opts, counts = reader.call_many((("options", (None,)), ("review_counts", ())))
    assert opts["n_frames"] > 0 and counts == {"junk": 0, "keep": 0}
    with store.connect(store_copy, read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT frame_id FROM frames LIMIT 3").fetchall()]
    assert reader.set_verdicts(ids, "keep") == 3
    assert reader.call("review_counts") == {"junk": 0, "keep": 3}


def test_lock_wait_setting(monkeypatch):
    monkeypatch.setenv(data.ENV_LOCK_WAIT, "0.5")
    assert data.lock_wait_s() == 0.5
    monkeypatch.setenv(data.ENV_LOCK_WAIT, "soon")
    assert data.lock_wait_s() == 4.0
