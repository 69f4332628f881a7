"""Links inside shared folders: an artifact or a bundle holds regular files and folders only.

A symbolic link planted in a shared folder would make a reader (or a copy) follow it out of the
folder, to a file its owner never meant to hand out; a hard link is a regular file that is also
somewhere else (another folder, maybe outside the store), so its content can change behind the
folder's back and a copy would hand that other file out. Both are refused, never followed:
:func:`entry_problem` judges one entry with ``lstat`` (which does not follow links), and
:func:`folder_problems` walks a folder without following links.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from optembed.errors import ArtifactError


def entry_problem(path: Path) -> str | None:
    """Why ``path`` may not be part of a shared folder (None when it is a plain folder or a
    regular file with one link; a missing entry is not judged here)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (refused: a shared folder holds regular files only)"
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (refused)"
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links (refused: it is also a file elsewhere; copy it instead of linking it)"
    return None


def path_problem(folder: Path, rel: str) -> str | None:
    """Why ``folder/rel`` may not be read: the folder itself, or any component of ``rel``, is a
    link (or the file is hard-linked)."""
    if os.path.islink(folder):
        return "lies in a folder that is a symbolic link (refused)"
    current = Path(folder)
    for part in PurePosixPath(rel).parts:
        current = current / part
        problem = entry_problem(current)
        if problem is not None:
            return problem
    return None


def folder_problems(folder: Path) -> list[tuple[str, str]]:
    """``(relative path, problem)`` for every link or special file under ``folder`` (links are
    reported, not followed)."""
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked folders
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            problem = entry_problem(path)
            if problem is not None:
                found.append((path.relative_to(folder).as_posix(), problem))
    return sorted(found)


def copy_regular(src: Path, dst: Path) -> None:
    """Copy the regular file ``src`` to ``dst`` without following a link at ``src``: opened with
    ``O_NOFOLLOW`` and checked (regular, one link) on the open descriptor."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(src, flags)
    except OSError as exc:
        if os.path.islink(src):
            raise LinkRefused(src, "is a symbolic link (refused: a shared folder holds regular files only)") from None
        raise exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise LinkRefused(src, "is not a regular file (refused)")
        if st.st_nlink > 1:
            raise LinkRefused(src, f"has {st.st_nlink} hard links (refused: it is also a file elsewhere)")
        with open(dst, "xb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
    shutil.copystat(src, dst, follow_symlinks=False)


class LinkRefused(ArtifactError):
    """A link (or a special file) met where a regular file was expected."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = Path(path)
        self.problem = problem
