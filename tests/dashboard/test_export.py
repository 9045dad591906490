"""Export files name the real frame files, also when a file name is not valid UTF-8: real JPEGs
ingested into a real store, exported, and every exported path opened again."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlparse

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import store
from pipeline.ingest import frame_file, ingest_folder
from pipeline.settings import Settings
from store import facts
from store.export import export_concat, export_csv, export_list, file_path, one_line_paths, to_bytes
from tests.conftest import REPO, write_jpeg

NON_UTF8 = b"caf\xe9_20240410_120000.jpg"
NAMES = [
    NON_UTF8,
    "plain_20240410_120100.jpg".encode(),
    "it's_20240410_120200.jpg".encode(),
    # a real backslash-x in a valid name: kept as it is, not read as an escape
    b"lit\\x41_20240410_120300.jpg",
    "ünï_20240410_120400.jpg".encode(),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[dict[bytes, bytes], pd.DataFrame, Path]:
    """(real absolute file name -> file bytes, `export_frames` of every frame, the store) of a
    real store that ingested real JPEGs, one of them named with a byte that is not UTF-8."""
    tmp = tmp_path_factory.mktemp("export")
    folder = os.path.join(os.fsencode(tmp), b"frames")
    os.mkdir(folder)
    files = {}
    for seed, name in enumerate(NAMES):
        path = os.path.join(folder, name)
        write_jpeg(Path(os.fsdecode(path)), seed=seed)
        with open(path, "rb") as fh:
            files[path] = fh.read()
    db = tmp / "s.duckdb"
    summary = ingest_folder(Path(os.fsdecode(folder)), db, Settings(workers=1), progress=False)
    assert summary.added == len(NAMES) and summary.failed == 0
    with store.connect(db, read_only=True) as con:
        frames = facts.export_frames(con, facts.FrameFilter(), "not_junk")
        preview = facts.export_frames(con, facts.FrameFilter(), "not_junk", limit=2)
    assert "caf\\xe9_20240410_120000.jpg" in set(frames["path"])  # the stored text
    assert list(preview["abs_path"]) == list(frames["abs_path"][:2])
    return files, frames, db


def _read(path: bytes) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_file_list_lines_open_the_real_files(exported, tmp_path):
    files, frames, _ = exported
    out = tmp_path / "frames.txt"
    out.write_bytes(to_bytes(export_list(frames["abs_path"])))
    lines = out.read_bytes().splitlines()
    assert sorted(lines) == sorted(files)
    for line in lines:
        assert _read(line) == files[line]


def _concat_files(data: bytes) -> list[bytes]:
    """The `file` names of an ffconcat file as ffmpeg's concat demuxer reads them."""
    names = []
    for line in data.splitlines():
        if line.startswith(b"file "):
            quoted = line[len(b"file ") :]
            assert quoted.startswith(b"'") and quoted.endswith(b"'")
            names.append(re.sub(rb"'\\''", b"'", quoted[1:-1]))
        else:
            assert line == b"" or line.startswith((b"#", b"ffconcat ", b"duration "))
    return names


def test_concat_file_names_the_real_files(exported, tmp_path):
    files, frames, _ = exported
    out = tmp_path / "frames.ffconcat"
    out.write_bytes(to_bytes(export_concat(frames["abs_path"], 24, "all frames")))
    names = _concat_files(out.read_bytes())
    # in time order, the last one repeated for its duration to count
    assert names[:-1] == [os.fsencode(file_path(p)) for p in frames["abs_path"]]
    assert names[-1] == names[-2] and sorted(set(names)) == sorted(files)
    for name in names:
        assert _read(name) == files[name]


def test_csv_is_utf8_text_and_its_file_uris_open_the_real_files(exported):
    files, frames, _ = exported
    data = export_csv(frames).encode("utf-8")  # strict: no surrogate in the CSV
    back = pd.read_csv(io.BytesIO(data))
    assert list(back["abs_path"]) == list(frames["abs_path"])  # the stored text, as shown
    assert list(back["file_uri"]) == [Path(file_path(p)).as_uri() for p in frames["abs_path"]]
    assert "caf%E9_20240410_120000.jpg" in data.decode()
    raw = [unquote_to_bytes(urlparse(uri).path) for uri in back["file_uri"]]
    assert sorted(raw) == sorted(files)
    for name in raw:
        assert _read(name) == files[name]


def test_file_path_follows_the_ingest_rule(exported):
    _, frames, _ = exported
    for root, path, abs_path in zip(frames["root"], frames["path"], frames["abs_path"]):
        assert file_path(abs_path) == str(frame_file(root, path))
    literal = next(p for p in frames["abs_path"] if "lit\\x41" in p)
    assert file_path(literal) == literal  # the file of the literal name exists
    # an already-real name (as `os.fsdecode` gives it) passes through
    real = [file_path(p) for p in frames["abs_path"]]
    assert [file_path(p) for p in real] == real


def test_line_break_check_runs_on_the_real_names(exported):
    _, frames, _ = exported
    kept, n_left_out = one_line_paths([*frames["abs_path"], "/x/a\nb.jpg"])
    assert n_left_out == 1 and len(kept) == len(frames)
    assert NON_UTF8 in {os.path.basename(os.fsencode(k)) for k in kept}


def test_review_page_offers_the_exports_with_the_non_utf8_frame(exported, monkeypatch):
    _, frames, db = exported
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b.label for b in at.get("download_button")] == [
        "File list (.txt)",
        "CSV",
        "ffmpeg concat",
    ]
    assert any(m.value.startswith(f"**{len(frames)} frames** to export") for m in at.markdown)
