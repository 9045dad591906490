"""The MP4 download of Review & export: `python -m pipeline export --format mp4` as a subprocess.

The dashboard never imports `pipeline` (it must start fast, without the encoder), so it runs the
CLI with the page's filters as flags: `export_args` maps a `FrameFilter` and an export mode to
the CLI's flags, which are the URL's keys and values (`filters.serialise`). `make_video` runs
the command in a temporary folder, reports progress from the CLI's progress bar (`done/total`
on stderr), and returns the video's bytes and the CLI's summary, or the CLI's one-line error;
the folder is removed whatever happens, and the command is stopped if the page run is.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dashboard import filters
from store.facts import EXPORT_MODES, FrameFilter

ROOT = Path(__file__).resolve().parents[1]
# None: the frames' own width, at most 1280 (`pipeline.video.MAX_AUTO_WIDTH`), the default
WIDTHS = (None, 640, 960, 1280, 1920, 2560, 3840)
DEFAULT_WIDTH = None
_PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


def export_args(flt: FrameFilter, mode: str) -> list[str]:
    """The `python -m pipeline export` flags that select what the page exports: `--frames
    MODE` and one `--KEY=VALUE` per filter, exactly as the URL holds it (run and detector always
    given, so the video is the view even if a newer run completes meanwhile)."""
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; choose one of {EXPORT_MODES}")
    if flt.frame_ids:
        raise ValueError("a selection of frames is not an export filter")
    url = filters.serialise(flt, {})  # no defaults to leave out: run and det are written too
    if flt.run_id is None:  # no analysis yet: no detector to name
        url.pop("det", None)
    return ["--frames", mode, *(f"--{key}={value}" for key, value in url.items())]


@dataclass
class Video:
    data: bytes | None  # the MP4, or None when the command failed
    summary: str  # what went in and what was left out (the CLI's stdout)
    error: str | None = None


def command(
    db: Path, out: Path, flt: FrameFilter, mode: str, fps: int, width: int | None, deflicker: bool
) -> list[str]:
    """The command line that writes the page's video to `out`."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        "export",
        "--db",
        str(db),
        "--format",
        "mp4",
        "--out",
        str(out),
        "--fps",
        str(int(fps)),
        *(["--width", str(int(width))] if width else []),
        *(["--deflicker"] if deflicker else []),
        *export_args(flt, mode),
    ]


def command_line(
    db: Path, flt: FrameFilter, mode: str, fps: int, width: int | None, deflicker: bool
) -> str:
    """The same export as a shell command a user can run (long videos, other machines)."""
    args = command(db, Path("timelapse.mp4"), flt, mode, fps, width, deflicker)
    return shlex.join(["python", *args[1:]])


def make_video(
    db: Path,
    flt: FrameFilter,
    mode: str,
    fps: int,
    width: int,
    deflicker: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> Video:
    """Run the export; `on_progress(done, total)` is called as frames are encoded."""
    with tempfile.TemporaryDirectory(prefix="timelapse-mp4-") as tmp:
        out = Path(tmp) / "timelapse.mp4"
        log = Path(tmp) / "summary.txt"
        with open(log, "wb") as stdout:
            proc = subprocess.Popen(
                command(db, out, flt, mode, fps, width, deflicker),
                cwd=ROOT,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env={**os.environ, "COLUMNS": "100"},
            )
            try:
                stderr = _follow(proc, on_progress)
                code = proc.wait()
            finally:
                if proc.poll() is None:  # the page run was stopped: stop the export too
                    proc.terminate()
                    proc.wait()
        summary = log.read_text(errors="replace").strip().replace(str(out), out.name)
        if code != 0:
            return Video(None, summary, _error_line(stderr, code))
        return Video(out.read_bytes(), summary)


def _follow(proc: subprocess.Popen, on_progress: Callable[[int, int], None] | None) -> bytes:
    """Read the command's stderr to its end, calling `on_progress` for each progress-bar
    update; returns the stderr's last 8 KiB (where an error line is)."""
    tail = b""
    while True:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            return tail
        tail = (tail + chunk)[-8192:]
        updates = _PROGRESS.findall(tail[-1024:])
        if updates and on_progress is not None:
            done, total = updates[-1]
            on_progress(int(done), int(total))


def _error_line(stderr: bytes, code: int) -> str:
    """The CLI's one-line `error: ...` message, or the last line it wrote."""
    lines = [line.strip() for line in re.split(rb"[\r\n]", stderr) if line.strip()]
    text = [line.decode("utf-8", "replace") for line in lines]
    errors = [line for line in text if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: ") :]
    return (text[-1] if text else "") or f"the export stopped with exit code {code}"
