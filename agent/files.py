"""Checks on the files and directories the agent and the collector trust: who else can read a
secret, and whether a state directory is really theirs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

POSTS_AS_HOST = "anyone who can read it can post as this host"
ACTS_ON_ACCOUNT = "anyone who can read it can use the CertCentral account through the API"


def secret_file_warning(path: Path, key: str, consequence: str = POSTS_AS_HOST) -> str | None:
    """A warning when ``path`` (a file holding a secret) can be read by its group or by others;
    ``consequence`` says what a reader could do."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # reading it reports what is wrong
    who = [
        name for bit, name in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "others")) if mode & bit
    ]
    if not who:
        return None
    return (
        f"{key}: {path} is readable by {' and '.join(who)} (mode {stat.S_IMODE(mode):04o}): "
        f"{consequence}; chmod 600 {path}"
    )


def state_dir_problem(path: Path) -> str | None:
    """Why ``path`` must not be used as a state directory, or None (also when it does not
    exist yet: it is then created with mode 0700).

    A symlink could point the spool and the lock anywhere a local user chooses, and a
    directory others can write lets them swap the spool or last.json under the daemon.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # not there yet: the caller says whether it can be made
    except OSError as e:
        return f"{path}: cannot inspect: {e.strerror}"
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if not os.path.exists(path):
            return (
                f"{path} is a dangling symbolic link (to {target}, which does not exist); "
                "point state_dir at a real directory"
            )
        return f"{path} is a symbolic link (to {target}); point state_dir at the real directory"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} exists and is not a directory"
    writable = [
        name
        for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others"))
        if st.st_mode & bit
    ]
    if writable:
        return (
            f"{path} is writable by {' and '.join(writable)} (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"they could replace the spool or the last result; chmod 700 {path}"
        )
    return None
