"""Directories and files with an exact owner, group, mode and content, written atomically.

Shared by the runit role's modules (envdir, runit_services). Each function
returns True when something changed, or would have in check mode.
"""

from __future__ import annotations

import os
import stat
import tempfile


def _matches(st: os.stat_result, uid: int, gid: int, mode: int) -> bool:
    return st.st_uid == uid and st.st_gid == gid and stat.S_IMODE(st.st_mode) == mode


def ensure_dir(path: str, uid: int, gid: int, mode: int, check: bool) -> bool:
    """Create the directory path (its parent must exist) or fix its owner and mode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not check:
            os.mkdir(path, mode)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if _matches(st, uid, gid, mode):
        return False
    if not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True


def ensure_file(path: str, content: str, *, uid: int, gid: int, mode: int, check: bool) -> bool:
    """Write content when the file, its owner or its mode differ: temporary file, fsync, rename."""
    data = content.encode()
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and _matches(st, uid, gid, mode):
            with open(path, "rb") as current:
                if current.read() == data:
                    return False
    except FileNotFoundError:
        pass
    if check:
        return True
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ansible-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True
