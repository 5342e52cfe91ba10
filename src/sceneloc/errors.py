"""The one exception type users see (the CLI prints its message on one line and exits with 2), and
the one guard against overwriting a user's folder."""

from __future__ import annotations

from pathlib import Path


class SceneLocError(Exception):
    """A problem with the user's input (a file, an option, a map): message names the file and the problem."""


def refuse_to_overwrite(path: Path, allowed: bool, hint: str = "use --force to overwrite") -> bool:
    """One-line error when ``path`` is a file, or a folder with something in it and ``allowed`` is
    false (no ``--force``); returns whether the folder holds anything (the caller's cue to clean up)."""
    if path.exists() and not path.is_dir():
        raise SceneLocError(f"{path}: exists and is not a directory")
    occupied = path.exists() and any(path.iterdir())
    if occupied and not allowed:
        raise SceneLocError(f"{path}: directory is not empty ({hint})")
    return occupied
