"""Fixtures and helpers shared across the test folders: a fresh store path, the real data,
tiny generated JPEGs with EXIF, Chromium and a running dashboard, the small demo store the
dashboard and browser tests read, and the served store of `tests/serving.py`."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
GARDEN_MONZ = REALDATA / "garden-monz"
NYC_WEATHER = REALDATA / "weather" / "nyc-airports-2013-hourly.csv"
CHROMIUM = Path("/usr/bin/chromium")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `precision = auto`'s measured answers go to a folder of this test session (children inherit
# it), never to the user's own cache.
os.environ["TIMELAPSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="timelapse-test-cache-")
atexit.register(shutil.rmtree, os.environ["TIMELAPSE_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest replaces `sys.modules['__main__']` with the app script and leaves it.

    Process pools (ingest's forkserver workers) re-run `__main__` in each new worker, so a later
    test would start workers that run the dashboard and die. Put the real one back after each test.
    """
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(autouse=True)
def _restore_decode_limit():
    """An in-process ingest sets this process's decompression-bomb limit from its settings
    (`pipeline.pixels.configure`), as each real command does once. A test that ingests with a
    low `max_image_pixels` must not leave it for the next test's decodes: put it back."""
    from pipeline import pixels

    limit = pixels._max_pixels
    yield
    pixels._max_pixels = limit


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a store file that does not exist yet."""
    return tmp_path / "store.duckdb"


def write_jpeg(
    path: Path,
    when: datetime | None = None,
    size=(64, 48),
    colour=(90, 140, 60),
    seed: int = 0,
    offset: str | None = None,
) -> Path:
    """A small noisy JPEG, with EXIF DateTimeOriginal (and OffsetTimeOriginal) when given."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.float32)
    pixels = np.clip(base + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    if when is not None:
        exif_ifd = exif.get_ifd(0x8769)
        exif_ifd[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
        if offset is not None:
            exif_ifd[0x9011] = offset  # OffsetTimeOriginal
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=85, exif=exif)
    return path


@pytest.fixture
def make_jpeg():
    """Factory: make_jpeg(path, when=None, size=(64, 48), colour=..., seed=0, offset=None)."""
    return write_jpeg


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """Twelve frames ten minutes apart, EXIF-dated, in two sub-folders."""
    folder = tmp_path / "frames"
    start = datetime(2024, 4, 10, 11, 0, 0)
    for i in range(12):
        when = start + timedelta(minutes=10 * i)
        sub = "a" if i < 6 else "b"
        write_jpeg(folder / sub / f"frame_{i:03d}.jpg", when=when, seed=i)
    return folder


def _realdata(path: Path, what: str) -> Path:
    """`path` inside ../shared/realdata, or a skip that says what is missing and where.

    A plain clone of the repository has no ../shared beside it, so these tests skip there. CI
    always has it and runs with TIMELAPSE_STRICT=1, which turns the skip into a failure: CI can
    never pass by skipping them.
    """
    if path.exists():
        return path
    _skip(
        f"needs {what} at {path} (the project's shared real test data, beside the "
        "repository: ../shared/realdata; see its README)"
    )


def _skip(reason: str) -> None:
    """Skip for a missing prerequisite, or fail under TIMELAPSE_STRICT=1 (set by .ci/run)."""
    if os.environ.get("TIMELAPSE_STRICT") == "1":
        pytest.fail(f"TIMELAPSE_STRICT=1 and this test {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def garden_monz() -> Path:
    """The 13 real garden frames with EXIF (../shared/realdata/garden-monz)."""
    return _realdata(GARDEN_MONZ, "the 13 real garden frames")


@pytest.fixture(scope="session")
def nyc_weather() -> Path:
    """The real NYC airports hourly weather table (../shared/realdata/weather)."""
    return _realdata(NYC_WEATHER, "the real NYC hourly weather table")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, or a skip that says why (CI's .ci/run installs it)."""
    if not CHROMIUM.exists():
        _skip(
            "needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium); "
            ".ci/run installs it"
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    """One headless Chromium for the whole session (Playwright's sync API allows one per thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(chromium_path),
            headless=True,
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def writer_opens(db: Path) -> str:
    """What a read-write `store.connect` of `db` in another process meets at once: 'opened', or
    'locked' while this process (or another) holds the file."""
    code = (
        "import store\n"
        "try:\n"
        f"    store.connect({str(db)!r}, timeout=0).close()\n"
        "except store.StoreLockedError:\n"
        "    print('locked')\n"
        "else:\n"
        "    print('opened')\n"
    )
    return python_output(code)


def python_output(code: str) -> str:
    """What `code` prints, run by a fresh Python in the repository (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@contextlib.contextmanager
def dashboard_server(db: Path, log_path: Path, timeout: float = 90, **env: str):
    """`streamlit run dashboard/app.py -- --db DB` on a free 127.0.0.1 port; yields its URL.

    Fails the test with the server's log when it does not answer its health check in time;
    stops the server afterwards.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(REPO / "dashboard" / "app.py"),
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--",
                "--db",
                str(db),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TIMELAPSE_DB": "", **env},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("streamlit did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def serving_store(tmp_path_factory):
    """A small demo time-lapse analysed with the `pixels` model, and frames of the same camera
    it has never seen (`tests/serving.py`); copy the store (`.copy(folder)`) to change it."""
    from tests.serving import build_demo_store

    return build_demo_store(tmp_path_factory.mktemp("demo-store"))


# --- the demo store the dashboard and browser tests read ---------------------------------------

DEMO_FRAMES = 150


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """`python -m pipeline demo --frames 150 --no-serve --model pixels`, run once per session.
    Tests must not write to it (use `store_copy`)."""
    out = tmp_path_factory.mktemp("demo")
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "demo",
        "--frames",
        str(DEMO_FRAMES),
        "--no-serve",
        "--model",
        "pixels",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    db = out / "garden.duckdb"
    if proc.returncode != 0 or not db.exists():
        pytest.fail(
            f"the demo store could not be made ({' '.join(cmd)}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return db


@pytest.fixture
def store_copy(demo_store: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store (same frames folder) for tests that write."""
    db = tmp_path / "garden.duckdb"
    shutil.copy(demo_store, db)
    return db


@pytest.fixture
def con(demo_store):
    """A read-only connection to the demo store."""
    import store

    with store.connect(demo_store, read_only=True) as con:
        yield con


@pytest.fixture
def run_id(con):
    """The demo store's latest complete analysis run."""
    from store import facts  # here: the tests that need no store import less

    return facts.latest_run_id(con)
