"""Change watching for SQLite: cheap notice of commits by other processes.

An idle worker must cost close to nothing, yet pick up a job enqueued by
another process within milliseconds.  Polling ``PRAGMA data_version`` every
few milliseconds does the latter but costs a wake-up each time.  On Linux we
watch the database's directory with inotify (through ``ctypes``, still only the
standard library): a commit writes the ``-wal`` file, the kernel tells us, and
the worker polls fast only for a short while after such activity.

This is the SQLite store's :class:`~minijobs.store.ChangeWatcher`; a server
database watches its own way (PostgreSQL: ``LISTEN``), behind the same
``watch(on_change)``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import sql

if TYPE_CHECKING:
    import ctypes

logger = logging.getLogger(__name__)

#: Without inotify: after the last change seen, poll ``data_version`` at ``poll_interval_s`` for this long.
FAST_POLL_WINDOW_S = 1.0
#: With inotify: after a file event or a change seen, poll fast for this long.  Each commit writes the
#: -wal file (an event) a moment before it becomes visible (the wal-index is updated through shared
#: memory, which raises no event; with ``durability="full"`` an fsync lies in between), so one event
#: needs polling only until its commit shows; every further commit brings its own event.
FAST_POLL_AFTER_EVENT_S = 0.05
#: Poll interval of a quiet database when inotify reports activity (a safety net only).
IDLE_POLL_S = 0.5
#: Poll interval of a quiet database where inotify is unavailable.
IDLE_POLL_NO_INOTIFY_S = 0.02

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_CLOSE_WRITE = 0x00000008
_HEADER = struct.Struct("iIII")

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    """libc through ctypes, loaded on first use: ``import minijobs`` (a producer, a CLI call) never pays for
    ctypes and the subprocess module ``ctypes.util`` brings."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.inotify_init1  # noqa: B018 - probe the symbol
        except (OSError, AttributeError):
            _libc = None
    return _libc


def _errno() -> Any:
    import ctypes  # loaded already: only called after _load_libc succeeded

    return ctypes.get_errno()


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
            logger.debug("inotify_init1 failed (errno %d); falling back to polling", _errno())
            return None
        directory = os.path.dirname(os.path.abspath(db_path)) or "."
        mask = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO | _IN_CLOSE_WRITE
        if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
            logger.debug("inotify_add_watch failed (errno %d); falling back to polling", _errno())
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


class DataVersionWatcher:
    """Detects commits made by other connections through ``PRAGMA data_version``.

    The pragma is answered from the connection's own memory (no disk read, no
    lock), so polling it every few milliseconds costs next to nothing, on the
    worker's loop as well as anywhere.
    """

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        # Closed at garbage collection or interpreter exit if nobody calls close() (3.13 warns otherwise).
        self._finalizer = weakref.finalize(self, self._conn.close)
        self._last = self._version()

    def _version(self) -> int:
        return int(self._conn.execute(sql.DATA_VERSION).fetchone()[0])

    def changed(self) -> bool:
        """True if another connection committed since the last call (also when the check itself failed)."""
        try:
            current = self._version()
        except sqlite3.Error as exc:
            logger.warning("change detection failed: %s", exc)
            return True
        if current != self._last:
            self._last = current
            return True
        return False

    async def watch(self, on_change: Callable[[], None], *, poll_interval_s: float) -> None:
        """Call ``on_change`` (in this loop) whenever another connection commits; runs until cancelled.

        Polls ``data_version`` every ``poll_interval_s`` while the database is
        busy and slowly when it is quiet.  Where inotify works (Linux), a file
        event on the database switches to fast polling for a moment only: long
        enough for that commit to show, short enough that this process's own
        writes (a leadership renewal every few seconds) cost a few polls instead
        of a second of them.  Elsewhere, any change keeps fast polling on for
        ``FAST_POLL_WINDOW_S``.
        """
        import asyncio  # lazily: `import minijobs` loads no event loop machinery

        loop = asyncio.get_running_loop()
        fast = poll_interval_s
        notifier = DirectoryWatch.create(self.path)
        slow = max(fast, IDLE_POLL_S if notifier is not None else IDLE_POLL_NO_INOTIFY_S)
        window = FAST_POLL_AFTER_EVENT_S if notifier is not None else FAST_POLL_WINDOW_S
        activity = asyncio.Event()
        fast_until = loop.time() + window

        def on_fs_event() -> None:
            if notifier is not None and notifier.read():
                activity.set()

        if notifier is not None:
            loop.add_reader(notifier.fileno(), on_fs_event)
        try:
            while True:
                try:
                    async with asyncio.timeout(fast if loop.time() < fast_until else slow):
                        await activity.wait()
                except TimeoutError:
                    pass
                if activity.is_set():
                    activity.clear()
                    fast_until = loop.time() + window
                if self.changed():
                    fast_until = loop.time() + window
                    on_change()
        finally:
            if notifier is not None:
                loop.remove_reader(notifier.fileno())
                notifier.close()

    def close(self) -> None:
        self._finalizer()
