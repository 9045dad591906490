"""Export file formats: pure formatting of an export frame list, no SQL.

The rows come from `store.facts.export_frames`; these functions turn them into the file list,
the ffmpeg concat file and the CSV that the dashboard's downloads and `python -m pipeline
export` write (one implementation for both), and give the real file name of a stored path.

The store holds each frame's path as valid UTF-8 text: ingest writes the bytes of a file name
that is not valid UTF-8 as `\\xNN` (`pipeline.ingest.stored_text`). The exports give the real
file: the file list and the concat file hold the real name's bytes (build the text here, write
it with `to_bytes`); the CSV stays valid UTF-8 text and adds a `file_uri` column that names the
real bytes (see `export_csv`).
"""

from __future__ import annotations

import io
import os
import re
from typing import Iterable
from urllib.parse import quote_from_bytes

import pandas as pd

_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def file_path(abs_path: str) -> str:
    """The file-system name (as `os.fsdecode` gives it) of a stored `root/path`.

    The `\\xNN` escapes ingest wrote for bytes that were not UTF-8 become those bytes again
    (surrogate escapes in the str), unless a file of the literal name exists: the same rule as
    `pipeline.ingest.frame_file` (the dashboard does not import `pipeline`).
    """
    abs_path = str(abs_path)
    if "\\x" not in abs_path or os.path.lexists(abs_path):
        return abs_path
    raw = _ESCAPE.sub(
        lambda m: bytes([int(m.group(1), 16)]), abs_path.encode("utf-8", "surrogateescape")
    )
    return os.fsdecode(raw)


def to_bytes(text: str) -> bytes:
    """An export's text as the bytes to download: UTF-8, and a file name that was not valid
    UTF-8 as its own bytes again (surrogateescape, as `os.fsencode` does)."""
    return text.encode("utf-8", "surrogateescape")


def _quote(path: str) -> str:
    """A path in ffconcat's single quotes (a quote inside becomes '\\'')."""
    return "'" + str(path).replace("'", "'\\''") + "'"


def one_line_paths(paths: Iterable[str]) -> tuple[list[str], int]:
    """The real file names (`file_path`) of stored paths that fit on one line, and how many
    were left out.

    The file list and the concat file hold one path per line, so a file name with a line break
    would become lines of its own (e.g. an injected `file '...'` directive). The CSV keeps them.
    """
    paths = [file_path(p) for p in paths]
    kept = [p for p in paths if "\n" not in p and "\r" not in p]
    return kept, len(paths) - len(kept)


def export_list(paths: Iterable[str]) -> str:
    """A plain file list, one absolute path per line (names with a line break left out).

    `paths` are the stored `abs_path`s; the lines are the real file names, so write the text
    with `to_bytes` (a name that was not valid UTF-8 is a surrogate escape in the str)."""
    kept, _ = one_line_paths(paths)
    return "".join(p + "\n" for p in kept)


def export_concat(paths: Iterable[str], fps: int, description: str = "") -> str:
    """An ffmpeg concat file that plays the frames at `fps` frames per second:
    `ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps=FPS -pix_fmt yuv420p out.mp4`.
    File names with a line break are left out (see `one_line_paths`) and counted in a comment.
    `paths` are the stored `abs_path`s; the `file` lines name the real files, so write the text
    with `to_bytes` (ffmpeg reads the names as bytes)."""
    paths, n_left_out = one_line_paths(paths)
    if fps < 1:
        raise ValueError("fps must be at least 1")
    lines = [
        "ffconcat version 1.0",
        f"# {len(paths)} frames at {fps} fps" + (f"; {description}" if description else ""),
        f"# ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps={fps} -pix_fmt yuv420p "
        "timelapse.mp4",
    ]
    if n_left_out:
        lines.append(f"# {n_left_out} frame(s) left out: their file names hold a line break")
    duration = 1.0 / fps
    for path in paths:
        lines += [f"file {_quote(path)}", f"duration {duration:.6f}"]
    if paths:  # the concat demuxer needs the last file repeated for its duration to count
        lines.append(f"file {_quote(paths[-1])}")
    return "\n".join(lines) + "\n"


def export_csv(frames: pd.DataFrame) -> str:
    """The export rows (`store.facts.export_frames`) as CSV text, valid UTF-8, plus a
    `file_uri` column.

    `path` and `abs_path` stay the stored text, as the dashboard shows them: a name that was
    not valid UTF-8 has `\\xNN` for its bad bytes there. `file_uri` is the real file as an RFC
    8089 `file://` URI, its bytes percent-encoded as `Path.as_uri()` does (`caf%E9.jpg`), so it
    names the file whatever the name's bytes: `urllib.parse.unquote_to_bytes` of its path part
    gives them back. It is empty for a path that is not absolute.
    """
    out = frames.assign(taken_at=frames["taken_at"].astype(str))
    if "abs_path" in out:
        out["file_uri"] = [_file_uri(p) for p in out["abs_path"]]
    buf = io.StringIO()
    out.to_csv(buf, index=False)
    return buf.getvalue()


def _file_uri(abs_path: str) -> str:
    """`Path.as_uri()` of an absolute path, nine times faster (quoting the bytes directly)."""
    path = file_path(abs_path)
    return "file://" + quote_from_bytes(os.fsencode(path)) if path.startswith("/") else ""
