"""Regression tests for core bugs the reliability suite found (fast, single process)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from minijobs import App, Plugin, StoreError


class _TablePlugin(Plugin):
    migrations = ("CREATE TABLE reliability_plugin_table (x INTEGER)",)

    @classmethod
    def get_identifier(cls) -> str:
        return "reliability.table_plugin"


def test_open_with_a_plugin_that_migrates_does_not_deadlock(tmp_path: Path) -> None:
    # Plugin.migrate reaches the store through app.store; App.open used to hold its
    # (non-reentrant) lock while migrating plugins, so the first open hung forever.
    app = App(tmp_path / "jobs.sqlite3", plugins=[_TablePlugin()])
    opened = threading.Event()

    def target() -> None:
        app.open()
        opened.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert opened.wait(10), "App.open() deadlocked while migrating a plugin"
    thread.join()
    assert app.store.schema_version("reliability.table_plugin") == 1
    assert app.store.query("t", "SELECT count(*) FROM reliability_plugin_table") == [(0,)]
    app.close()


def test_failed_plugin_migration_leaves_the_app_closed(tmp_path: Path) -> None:
    class Broken(Plugin):
        migrations = ("CREATE TABLE broken (",)

    app = App(tmp_path / "jobs.sqlite3", plugins=[Broken()])
    for _ in range(2):  # the second open must retry, not return a half-open store
        with pytest.raises(StoreError, match="incomplete input"):
            app.open()
    assert app._store is None
