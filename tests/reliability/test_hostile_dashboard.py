"""Scenario 4: hostile input in the dashboard (AppTest against a real store made by the pipeline).

- Every URL key the app knows (shared filters and page keys) gets SQL, paths, 100k-character
  strings and odd unicode (NUL, right-to-left override, zero-width, combining marks, emoji,
  full-width digits) on every page: the page renders with a notice, the store is unchanged and
  no hostile value is written back into the URL.
- The one free-text form field (the review note) stores hostile text verbatim.
- A Python audit hook records every file the app opens: with a frame whose root was tampered to
  /etc, one whose path climbs out with '../', and one whose file is a symlink to a JPEG outside
  the frames folder, the Frame page shows thumbnails and never opens anything outside the
  frames root, the store and the installed code.
- File names are data too: a frame whose name holds a line break cannot inject a directive
  into the exported ffmpeg concat file or the .txt list (it is left out of both; the CSV,
  which quotes it, keeps it).
- The password gate holds on every page whatever the URL says, and nothing reads the store
  before the password is given.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import store
from dashboard import filters, pages
from tests.conftest import REPO, write_jpeg
from tests.reliability.conftest import make_frames, one, query, run_ok

# the whole module on one xdist worker (`make test`): its module fixtures are built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile_dashboard")]

APP = str(REPO / "dashboard" / "app.py")
PAGES = {page.view: page.title for page in pages.PAGES}
URL_KEYS = filters.FILTER_KEYS + pages.PAGE_KEYS
HOSTILE = [
    "1; DROP TABLE frames; --",
    "' OR '1'='1' UNION SELECT path FROM frames --",
    "../../../../etc/passwd",
    "/etc/shadow\x00.jpg",
    "A" * 100_000,
    "9" * 100_000,
    "\u202egpj.exe\u200b\u0301\u0301 🌱🦊 ＤＲＯＰ",
    "１２３",  # full-width digits
    "-1,-2147483649,1e309,nan,inf",
    "<script>alert(document.cookie)</script>",
    "${jndi:ldap://127.0.0.1/x} %s%n {0}",
    "\r\nSet-Cookie: x=1",
]
NEWLINE_NAME = "evil\nfile 'injected.jpg'\nduration 99\n_20240410_173000.jpg"

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # stays for the session; records only while _OPENED is a list


class _Recording:
    def __enter__(self) -> list[str]:
        global _OPENED
        _OPENED = []
        return _OPENED

    def __exit__(self, *exc) -> None:
        global _OPENED
        _OPENED = None


@pytest.fixture(scope="module")
def garden(tmp_path_factory):
    """(frames folder, store, a folder outside with a real JPEG) after one pipeline run."""
    tmp = tmp_path_factory.mktemp("hostile")
    folder = tmp / "frames"
    make_frames(folder, 24)
    write_jpeg(folder / NEWLINE_NAME, when=datetime(2024, 4, 10, 17, 30), seed=50)
    outside = tmp / "outside"
    write_jpeg(outside / "secret.jpg", seed=77)
    db = tmp / "garden.duckdb"
    run_ok("run", folder, "--db", db, "--model", "pixels", "--detectors", "iforest,lof,hbos")
    return folder, db, outside


@pytest.fixture
def store_copy(garden, tmp_path):
    _, db, _ = garden
    copy = tmp_path / "garden.duckdb"
    shutil.copy(db, copy)
    return copy


def _session(db: Path, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "2")
    at = AppTest.from_file(APP, default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def _clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("page", list(PAGES))
def test_hostile_values_in_every_url_key_on_every_page(garden, monkeypatch, page):
    _, db, _ = garden
    before = _digest(db)
    offset = list(PAGES).index(page)
    for variant in range(2):  # each key sees a different hostile value per page and variant
        params = {
            key: HOSTILE[(i + offset * 3 + variant * 5) % len(HOSTILE)]
            for i, key in enumerate(URL_KEYS)
        }
        at = _session(db, monkeypatch, **params)
        at.switch_page(page).run()
        _clean(at)
        assert [t.value for t in at.title][:1] == [PAGES[page]]
        assert any("Ignored" in w.value for w in at.warning)
        for key, value in at.query_params.items():
            for bad in set(params.values()):
                assert bad not in value, (key, value[:80])
    assert _digest(db) == before


def test_hostile_review_note_is_stored_verbatim(store_copy, monkeypatch):
    note = "'); DELETE FROM reviews; -- ../../etc/passwd \u202e🌱\u0301 " + "x" * 300
    at = _session(store_copy, monkeypatch)
    at.switch_page("views/review.py").run()
    at.text_input(key="review_note").input(note)
    at.button(key="review_junk").click().run()
    _clean(at)
    assert query(store_copy, "SELECT verdict, note FROM reviews") == [("junk", note)]
    assert one(store_copy, "SELECT count(*) FROM frames") == 25


def test_frame_page_never_reads_outside_the_frames_root(garden, store_copy, monkeypatch, tmp_path):
    folder, _, outside = garden
    private = tmp_path / "frames"
    shutil.copytree(folder, private)
    os.remove(private / "f_003.jpg")
    os.symlink(outside / "secret.jpg", private / "f_003.jpg")  # a link out of the root
    with store.connect(store_copy) as con:
        con.execute("UPDATE frames SET root = ?", [str(private)])
        con.execute("UPDATE frames SET root = '/etc', path = 'passwd' WHERE path = 'f_001.jpg'")
        con.execute(
            "UPDATE frames SET path = '../../../../../../etc/passwd' WHERE path = 'f_002.jpg'"
        )
        con.execute("UPDATE frames SET root = '/', path = 'etc/hostname' WHERE path = 'f_004.jpg'")
        ids = dict(con.execute("SELECT path, frame_id FROM frames").fetchall())
    tampered = [
        ids["passwd"],
        ids["../../../../../../etc/passwd"],
        ids["f_003.jpg"],
        ids["etc/hostname"],
    ]
    with _Recording() as opened:
        for frame_id in tampered:
            at = _session(store_copy, monkeypatch, frame=str(frame_id))
            at.switch_page("views/frame.py").run()
            _clean(at)
            assert at.image[0].captions[0].startswith("thumbnail (the original file is not")
        at = _session(store_copy, monkeypatch, frame=str(ids["f_005.jpg"]))
        at.switch_page("views/frame.py").run()
        _clean(at)
        assert at.image[0].captions[0] == "original file"
    allowed = [
        str(private),
        str(store_copy.parent),
        str(REPO),
        sys.prefix,
        sys.base_prefix,
        "/usr/share/zoneinfo",
        "/proc/",
        "/dev/null",
    ]
    touched = [p for p in opened if not any(os.path.abspath(p).startswith(a) for a in allowed)]
    assert not [
        p for p in touched if p.startswith(("/etc/passwd", "/etc/hostname", str(outside)))
    ], touched
    assert str(private / "f_005.jpg") in opened  # the recording works: the good frame was read


def test_line_breaks_in_file_names_cannot_inject_into_exports(garden, monkeypatch):
    """The export files are built when a download is clicked, from `store.facts.export_frames`
    by `store.export`; here the same two steps run on the real store, and the Review page
    itself renders with the hostile name in the store."""
    import io

    import pandas as pd

    from store import facts
    from store.export import export_concat, export_list

    _, db, _ = garden
    at = _session(db, monkeypatch)
    at.switch_page("views/review.py").run()
    _clean(at)
    assert {b.label for b in at.get("download_button")} == {
        "File list (.txt)",
        "CSV",
        "ffmpeg concat",
    }

    with store.connect(db, read_only=True) as con:
        frames = facts.export_frames(con, facts.FrameFilter(), "not_junk")
    n_frames = len(frames)
    assert n_frames == one(db, "SELECT count(*) FROM frames")
    assert NEWLINE_NAME in set(frames["path"])
    concat = export_concat(frames["abs_path"], 24, "all frames")
    lines = [line for line in concat.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ffconcat version 1.0"
    assert {line.split(" ", 1)[0] for line in lines[1:]} <= {"file", "duration"}
    assert "file 'injected.jpg'" not in lines and "duration 99" not in lines
    files = [line for line in lines[1:] if line.startswith("file ")]
    assert len(files) == n_frames  # every other frame once and the last one twice
    assert "# 1 frame(s) left out: their file names hold a line break" in concat
    listing = export_list(frames["abs_path"]).splitlines()
    assert len(listing) == n_frames - 1 and "file 'injected.jpg'" not in listing
    assert all(line.startswith("/") and line.endswith(".jpg") for line in listing)
    # the CSV quotes the name, so it keeps the frame
    csv = io.StringIO()
    frames.to_csv(csv, index=False)
    assert NEWLINE_NAME in set(pd.read_csv(io.StringIO(csv.getvalue()))["path"])


@pytest.mark.parametrize("page", list(PAGES))
def test_password_gate_holds_on_every_page(garden, monkeypatch, page):
    _, db, _ = garden
    at = _session(
        db,
        monkeypatch,
        password="s3cret",
        _authed="True",
        authed="1",
        auth="true",
        embed="true",
        embed_options="disable_scrolling",
        frame="1",
    )
    at.secrets["password"] = "s3cret"
    with _Recording() as opened:
        at.switch_page(page).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Time-lapse outliers"]
    assert [t.label for t in at.text_input] == ["Password"]
    assert not at.metric and not at.image and not at.dataframe
    assert not [p for p in opened if p.startswith(str(db))], "the store was read before login"
    at.text_input[0].input("S3CRET")  # near misses fail
    at.button[0].click().run()
    assert at.error[0].value == "Wrong password." and not at.metric
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    _clean(at)
