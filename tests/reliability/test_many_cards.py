"""Scenario 8: frames from many cards and folders.

Cameras number every card from IMG_0001 again, so two folders holding the same file names are
the normal case for an archive. Frames are keyed by where their file is (`location`), so:

- a second card with the same names adds its frames and changes nothing of the first card's:
  frame ids, reviews and the old run's scores stay on the images they were made for;
- a parent of an ingested folder, a folder link to it and a second hard link of a file reach
  files the store already has: no frame is stored twice;
- a file whose content changed at the same place is the one "changed" case: it keeps its frame
  id and loses its vectors, its review and its scores in earlier runs, and `info` says so;
- a store made before frames had a location is migrated and its folder is still recognised.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

import store
from store import migrations, reviews
from tests.conftest import write_jpeg
from tests.reliability.conftest import one, query, run_ok

pytestmark = pytest.mark.slow

N = 12


def _card(folder: Path, seed: int, start: datetime) -> Path:
    """A card's DCIM folder: IMG_0001..IMG_0012.jpg, 10 minutes apart, its own pixels."""
    for i in range(N):
        write_jpeg(
            folder / f"IMG_{i + 1:04d}.jpg",
            when=start + timedelta(minutes=10 * i),
            size=(96, 64),
            seed=seed * 100 + i,
            colour=(40 + seed * 60, 120, 200 - seed * 50),
        )
    return folder


def _frame(db: Path, card: Path, name: str) -> tuple[int, str]:
    """(frame_id, content_hash) of the frame whose file is card/name."""
    location = os.path.realpath(card / name)
    return query(db, "SELECT frame_id, content_hash FROM frames WHERE location = ?", [location])[0]


@pytest.fixture
def cards(tmp_path):
    """Two cards with the same file names and different pictures; camA run, IMG_0003 junk."""
    cam_a = _card(tmp_path / "archive" / "camA", 1, datetime(2024, 4, 10, 8, 0))
    cam_b = _card(tmp_path / "archive" / "camB", 2, datetime(2024, 5, 10, 8, 0))
    db = tmp_path / "store.duckdb"
    run_ok("run", cam_a, "--db", db, "--model", "pixels", "--detectors", "iforest,knn")
    junk_id, _ = _frame(db, cam_a, "IMG_0003.jpg")
    with store.connect(db) as con:
        reviews.set_verdicts(con, [junk_id], "junk", "camA's fox")
    return cam_a, cam_b, db


def test_a_second_card_with_the_same_names_adds_frames_and_moves_nothing(cards):
    cam_a, cam_b, db = cards
    before = query(db, "SELECT frame_id, location, content_hash FROM frames ORDER BY 1")
    scores = query(db, "SELECT frame_id, detector, score FROM outlier_scores ORDER BY 1, 2")
    proc = run_ok("ingest", cam_b, "--db", db, "--no-progress")
    assert f"{N} added, 0 changed, 0 unchanged, 0 failed" in proc.stdout
    assert one(db, "SELECT count(*) FROM frames") == 2 * N
    # camA's frames are untouched: same ids, places, pixels; their scores are the same rows
    assert (
        query(
            db,
            "SELECT frame_id, location, content_hash FROM frames "
            "WHERE root LIKE '%camA' ORDER BY 1",
        )
        == before
    )
    assert query(db, "SELECT frame_id, detector, score FROM outlier_scores ORDER BY 1, 2") == scores
    # the junk verdict is still on camA's IMG_0003, not on camB's
    junk_id, _ = _frame(db, cam_a, "IMG_0003.jpg")
    other_id, _ = _frame(db, cam_b, "IMG_0003.jpg")
    assert other_id != junk_id
    assert query(db, "SELECT frame_id, verdict, note FROM reviews") == [
        (junk_id, "junk", "camA's fox")
    ]
    info = run_ok("info", "--db", db).stdout
    assert f"frames: {2 * N} from" in info and "camA" in info and "camB" in info


def test_the_same_files_reached_again_are_the_same_frames(cards):
    cam_a, cam_b, db = cards
    run_ok("ingest", cam_b, "--db", db, "--no-progress")
    ids = query(db, "SELECT frame_id, location FROM frames ORDER BY 1")
    # the parent folder of both cards
    proc = run_ok("ingest", cam_a.parent, "--db", db, "--no-progress")
    assert f"0 added, 0 changed, {2 * N} unchanged" in proc.stdout
    # a folder link to camA, and a folder that holds a second hard link of one of camB's files
    link = cam_a.parent.parent / "link-to-camA"
    link.symlink_to(cam_a, target_is_directory=True)
    proc = run_ok("ingest", link, "--db", db, "--no-progress")
    assert f"0 added, 0 changed, {N} unchanged" in proc.stdout
    hard = cam_a.parent.parent / "hard"
    hard.mkdir()
    os.link(cam_b / "IMG_0007.jpg", hard / "copy-of-0007.jpg")
    proc = run_ok("ingest", hard, "--db", db, "--no-progress")
    assert "0 added, 0 changed, 1 unchanged" in proc.stdout
    assert query(db, "SELECT frame_id, location FROM frames ORDER BY 1") == ids


def test_a_changed_picture_keeps_its_id_and_drops_what_judged_the_old_one(cards):
    cam_a, _, db = cards
    changed_id, old_hash = _frame(db, cam_a, "IMG_0003.jpg")
    kept_id, _ = _frame(db, cam_a, "IMG_0004.jpg")
    with store.connect(db) as con:
        reviews.set_verdicts(con, [kept_id], "keep")
    n_scores = one(db, "SELECT count(*) FROM outlier_scores WHERE frame_id = ?", [kept_id])
    write_jpeg(
        cam_a / "IMG_0003.jpg",
        when=datetime(2024, 4, 10, 8, 20),
        size=(96, 64),
        seed=4242,
        colour=(250, 250, 250),
    )
    proc = run_ok("ingest", cam_a, "--db", db, "--no-progress")
    assert f"0 added, 1 changed, {N - 1} unchanged" in proc.stdout
    assert "1 review(s) of the old pictures" in proc.stdout
    same_id, new_hash = _frame(db, cam_a, "IMG_0003.jpg")
    assert same_id == changed_id and new_hash != old_hash
    assert one(db, "SELECT count(*) FROM embeddings WHERE frame_id = ?", [changed_id]) == 0
    for table in ("outlier_scores", "clusters", "neighbors"):
        assert one(db, f"SELECT count(*) FROM {table} WHERE frame_id = ?", [changed_id]) == 0
    assert one(db, "SELECT count(*) FROM neighbors WHERE neighbor_id = ?", [changed_id]) == 0
    # the other frames keep their review and scores
    assert query(db, "SELECT frame_id, verdict FROM reviews") == [(kept_id, "keep")]
    assert one(db, "SELECT count(*) FROM outlier_scores WHERE frame_id = ?", [kept_id]) == n_scores
    info = run_ok("info", "--db", db).stdout
    assert "[changed] IMG_0003.jpg: the file changed after it was ingested" in info
    assert "its review 'junk' of" in info and "(note: camA's fox)" in info
    # the next run embeds and scores the new picture
    run_ok("run", cam_a, "--db", db, "--model", "pixels", "--detectors", "iforest,knn")
    assert one(db, "SELECT count(*) FROM embeddings WHERE frame_id = ?", [changed_id]) == 1
    assert (
        one(
            db,
            "SELECT count(*) FROM outlier_scores WHERE frame_id = ? AND run_id = 2",
            [changed_id],
        )
        == 4
    )  # iforest, knn, the rarity cause's score, consensus


def test_a_store_made_before_locations_is_migrated_and_recognises_its_folder(tmp_path):
    card = _card(tmp_path / "cam", 1, datetime(2024, 4, 10, 8, 0))
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:  # what version 1 of the schema wrote
        con.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR "
            "NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        con.execute(migrations.MIGRATIONS[0][2])
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial')")
        for i, path in enumerate(sorted(card.iterdir()), start=1):
            st = path.stat()
            con.execute(
                "INSERT INTO frames (frame_id, path, root, time_source, file_bytes, file_mtime) "
                "VALUES (?, ?, ?, 'exif', ?, make_timestamp(?))",
                [i, path.name, str(card), st.st_size, st.st_mtime_ns // 1000],
            )
        con.execute(
            "INSERT INTO ingest_errors (path, stage, message, root) "
            "VALUES ('bad.jpg', 'ingest', 'truncated image', ?)",
            [str(card)],
        )
        con.execute("INSERT INTO reviews (frame_id, verdict) VALUES (3, 'junk')")
    proc = run_ok("migrate", "--db", db)
    assert f"schema version 1 -> {migrations.LATEST}" in proc.stdout
    assert query(db, "SELECT location FROM frames ORDER BY frame_id") == [
        (f"{card}/IMG_{i:04d}.jpg",) for i in range(1, N + 1)
    ]
    assert query(db, "SELECT location, stage FROM ingest_errors") == [(f"{card}/bad.jpg", "ingest")]
    proc = run_ok("ingest", card, "--db", db, "--no-progress")
    assert f"0 added, 0 changed, {N} unchanged" in proc.stdout
    assert query(db, "SELECT frame_id, verdict FROM reviews") == [(3, "junk")]
    with store.connect(db, read_only=True) as con:  # the views were made again
        assert con.execute("SELECT count(*) FROM frame_facts").fetchall() == [(N,)]
