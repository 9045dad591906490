"""Export file formats for a list of frame files (pure functions, no Streamlit)."""

from __future__ import annotations

from typing import Iterable


def _quote(path: str) -> str:
    """A path in ffconcat's single quotes (a quote inside becomes '\\'')."""
    return "'" + str(path).replace("'", "'\\''") + "'"


def one_line_paths(paths: Iterable[str]) -> tuple[list[str], int]:
    """The paths that fit on one line, and how many were left out.

    The file list and the concat file hold one path per line, so a file name with a line break
    would become lines of its own (e.g. an injected `file '...'` directive). The CSV keeps them.
    """
    paths = [str(p) for p in paths]
    kept = [p for p in paths if "\n" not in p and "\r" not in p]
    return kept, len(paths) - len(kept)


def export_list(paths: Iterable[str]) -> str:
    """A plain file list, one absolute path per line (names with a line break left out)."""
    kept, _ = one_line_paths(paths)
    return "".join(p + "\n" for p in kept)


def export_concat(paths: Iterable[str], fps: int, description: str = "") -> str:
    """An ffmpeg concat file that plays the frames at `fps` frames per second:
    `ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps=FPS -pix_fmt yuv420p out.mp4`.
    File names with a line break are left out (see `one_line_paths`) and counted in a comment."""
    paths, n_left_out = one_line_paths(paths)
    if fps < 1:
        raise ValueError("fps must be at least 1")
    lines = ["ffconcat version 1.0", f"# {len(paths)} frames at {fps} fps"
             + (f"; {description}" if description else ""),
             f"# ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps={fps} -pix_fmt yuv420p "
             "timelapse.mp4"]
    if n_left_out:
        lines.append(f"# {n_left_out} frame(s) left out: their file names hold a line break")
    duration = 1.0 / fps
    for path in paths:
        lines += [f"file {_quote(path)}", f"duration {duration:.6f}"]
    if paths:  # the concat demuxer needs the last file repeated for its duration to count
        lines.append(f"file {_quote(paths[-1])}")
    return "\n".join(lines) + "\n"
