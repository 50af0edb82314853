"""Real database files for the bad-input tests: building one, damaging chosen pages, dumping its whole content."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from minijobs import App


def dump(path: Path) -> list[str]:
    """Every statement that recreates the file (schema and rows): "unchanged" means an equal dump."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def make_db(path: Path, jobs: int = 200) -> None:
    app = App(path, plugins=[])
    f = app.job(name="x")(lambda *a: None)
    app.enqueue_many([f.prepare("payload " * 20) for _ in range(jobs)])
    app.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    conn.close()


def damage_deep_page(path: Path, btree: str) -> int:
    """Overwrite a leaf page in the middle of table or index ``btree`` with garbage; returns its page number."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (btree,)).fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    at = (root - 1) * page_size
    assert data[at] in (0x02, 0x05), "the b-tree must be deep enough for an interior root page"
    cells = int.from_bytes(data[at + 3:at + 5], "big")
    # An interior cell starts with the page number of its left child: take the middle child.
    cell = int.from_bytes(data[at + 12 + 2 * (cells // 2):at + 14 + 2 * (cells // 2)], "big")
    page = int.from_bytes(data[at + cell:at + cell + 4], "big")
    conn = sqlite3.connect(path)
    try:  # cross-check with SQLite's own page map where this build has it
        found = conn.execute("SELECT name, pagetype FROM dbstat WHERE pageno=?", (page,)).fetchone()
    except sqlite3.OperationalError:  # no dbstat virtual table in this SQLite
        found = None
    finally:
        conn.close()
    assert found is None or found == (btree, "leaf"), found
    assert 2 < page < len(data) // page_size
    data[(page - 1) * page_size:page * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    return page
