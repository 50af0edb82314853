"""Cheap notice of commits by other processes: inotify where the OS has it, polling otherwise.

An idle worker must cost close to nothing, yet pick up a job enqueued by
another process within milliseconds.  Polling ``PRAGMA data_version`` every
few milliseconds does the latter but costs a wake-up each time.  On Linux we
watch the database's directory with inotify (through ``ctypes``, still only the
standard library): a commit writes the ``-wal`` file, the kernel tells us, and
the worker polls fast only for a short while after such activity.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
import sys

logger = logging.getLogger(__name__)

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_CLOSE_WRITE = 0x00000008
_HEADER = struct.Struct("iIII")

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.inotify_init1  # noqa: B018 - probe the symbol
        except (OSError, AttributeError):
            _libc = None
    return _libc


class DirectoryWatch:
    """An inotify watch on the directory of a database file, filtered to that file's family."""

    def __init__(self, fd: int, names: frozenset[bytes]) -> None:
        self._fd = fd
        self._names = names

    @classmethod
    def create(cls, db_path: str) -> DirectoryWatch | None:
        """A watch for ``db_path``, or None where inotify is unavailable (then callers poll)."""
        libc = _load_libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            logger.debug("inotify_init1 failed (errno %d); falling back to polling", ctypes.get_errno())
            return None
        directory = os.path.dirname(os.path.abspath(db_path)) or "."
        mask = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO | _IN_CLOSE_WRITE
        if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
            logger.debug("inotify_add_watch failed (errno %d); falling back to polling", ctypes.get_errno())
            os.close(fd)
            return None
        base = os.fsencode(os.path.basename(db_path))
        return cls(fd, frozenset({base, base + b"-wal", base + b"-journal"}))

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bool:
        """Consume pending events; True if any concerned our database."""
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return relevant
            except OSError as exc:
                logger.debug("inotify read failed: %s", exc)
                return True
            if not data:
                return relevant
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, _mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                if name in self._names:
                    relevant = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
