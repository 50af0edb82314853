"""Storage: the :class:`Store` interface in domain verbs, its SQLite implementation, and the store thread.

Nothing outside this package writes SQL or sees a connection (plugins that
own tables of their own use :class:`SQLiteStore`'s ``execute_write``/``query``/
``transaction``, which are SQLite-only by nature).
"""

from .base import (
    ChangeWatcher,
    CheckpointMode,
    Durability,
    IntegrityCheck,
    LeaseRecord,
    NewJob,
    Outcome,
    PayloadRun,
    SlotKind,
    Store,
)
from .sql import MIGRATIONS
from .sqlite import WAL_SIZE_LIMIT_BYTES, SQLiteStore

__all__ = (
    "MIGRATIONS",
    "WAL_SIZE_LIMIT_BYTES",
    "ChangeWatcher",
    "CheckpointMode",
    "Durability",
    "IntegrityCheck",
    "LeaseRecord",
    "NewJob",
    "Outcome",
    "PayloadRun",
    "SQLiteStore",
    "SlotKind",
    "Store",
)
