"""Private state on disk: what edged keeps (messages, memories, conversations) is its user's only.

Modes are set explicitly, whatever the umask: directories 0700, files 0600. Existing ones are
tightened on open too, because a state directory from an older version (or made by hand) may
hold 0644 databases. SQLite creates a database's ``-wal``, ``-shm`` and ``-journal`` files with
the database file's own mode, so a 0600 database keeps its side files 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("edged.files")

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def secure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents 0700; tighten it to 0700 if it exists.

    An existing directory is tightened only when it is ours and not a shared one (sticky
    like /tmp), the home directory or the working directory: a database put straight into
    ``~`` or next to a project must not lock them (its files are 0600 all the same).
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by someone else: treat as existing
            _tighten_dir(d)
        else:
            os.chmod(d, DIR_MODE)  # mkdir's mode went through the umask
    if not missing:
        _tighten_dir(path)
    return path


def _tighten_dir(path: Path) -> None:
    try:
        st = path.stat()
        if (not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) == DIR_MODE
                or st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX
                or path.resolve() in (Path.home().resolve(), Path.cwd(), Path("/"))):
            return
        os.chmod(path, DIR_MODE)
    except (OSError, RuntimeError) as e:  # not fatal: the files in it are 0600 anyway
        log.warning("cannot make %s private (0700): %s", path, e)


def secure_file(path: str | os.PathLike[str], *, create: bool = True) -> Path:
    """Create ``path`` empty and 0600 if missing (and ``create``); make an existing regular
    file 0600. Anything else (a directory, a socket) is left for its opener to reject."""
    path = Path(path)
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, FILE_MODE)  # the umask may have taken more than group/other
            finally:
                os.close(fd)
            return path
    try:
        st = path.stat()
    except FileNotFoundError:
        return path
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
        try:
            os.chmod(path, FILE_MODE)
        except PermissionError as e:  # someone else's file we may use: say so, go on
            log.warning("cannot make %s private (0600): %s", path, e)
    return path


def secure_sqlite(path: str | os.PathLike[str]) -> Path:
    """Before connecting: the database file exists and is 0600, and so are its side files
    left by an older version (SQLite gives new side files the database's mode)."""
    path = Path(path)
    secure_file(path)
    for suffix in SQLITE_SIDE_FILES:
        secure_file(f"{path}{suffix}", create=False)
    return path
