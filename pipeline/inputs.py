"""Cheap checks of what a command was given, made before any heavy import or any work."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError


def check_folder(folder: Path) -> None:
    """FOLDER exists and is a folder (raises InputError naming the fix)."""
    if not folder.exists():
        raise InputError(f"the folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the folder that holds the frames")
