"""Bad input at every boundary: a clear, typed error and the database left exactly as it was.

"Unchanged" is checked with a full SQL dump of the file (schema, every row,
``sqlite_sequence``) taken before and after, not just a row count.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import random
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from damaged_files import damage_deep_page, dump, make_db

import minijobs
from minijobs import (
    App,
    ConfigurationError,
    CorruptDatabaseError,
    InvalidNameError,
    JobState,
    MinijobsError,
    PayloadTypeError,
    PayloadValueError,
    Queue,
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path / "jobs.sqlite3", plugins=[], max_payload_bytes=10_000)
    app.open()
    yield app
    app.close()


@pytest.fixture
def fn(app: App) -> minijobs.JobFunction[..., Any]:
    @app.job(name="bad_input.fn")
    def f(*args: Any, **kwargs: Any) -> str:
        return "ran"

    f.enqueue("one good job already there")
    return f


def refused(app: App, error: type[BaseException], action: Callable[[], object], match: str | None = None) -> str:
    """Run ``action``; it must raise ``error`` (a MinijobsError) and leave the file byte-for-byte the same in SQL."""
    before = dump(Path(app.path))
    with pytest.raises(error, match=match) as info:
        action()
    assert isinstance(info.value, MinijobsError)
    assert dump(Path(app.path)) == before, "a refused call changed the database"
    return str(info.value)


class Color(enum.IntEnum):
    RED = 1


class Thing:
    pass


# -- payloads --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (b"bytes", "bytes"),
        (bytearray(b"x"), "bytearray"),
        (dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "datetime"),
        (dt.date(2030, 1, 1), "date"),
        (decimal.Decimal("1.5"), "Decimal"),
        (uuid.UUID(int=1), "UUID"),
        (Thing(), "Thing"),
        (Color.RED, "Color"),
        (1 + 2j, "complex"),
        ((1, 2), "tuple"),
        ({"nested": [1, {"deeper": {3}}]}, "set"),
        (len, "builtin_function_or_method"),
    ],
)
def test_values_json_cannot_round_trip_are_refused(app: App, fn: Any, value: Any, needle: str) -> None:
    message = refused(app, PayloadTypeError, lambda: fn.enqueue(value))
    assert needle in message
    refused(app, PayloadTypeError, lambda: fn.enqueue(key=value))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), [1.0, {"x": float("nan")}]])
def test_nan_and_infinity_are_refused(app: App, fn: Any, value: Any) -> None:
    message = refused(app, PayloadValueError, lambda: fn.enqueue(value))
    assert "JSON cannot represent" in message
    assert isinstance(PayloadValueError("x"), ValueError)


@pytest.mark.parametrize("key", [1, 1.5, None, True, (1, 2)])
def test_non_string_dict_keys_are_refused(app: App, fn: Any, key: Any) -> None:
    message = refused(app, PayloadTypeError, lambda: fn.enqueue({key: "v"}))
    assert "keys must be str" in message
    assert isinstance(PayloadTypeError("x"), TypeError)


def test_oversized_payload_is_refused_counting_bytes_not_characters(app: App, fn: Any) -> None:
    refused(app, PayloadValueError, lambda: fn.enqueue("x" * 20_000), match="over the 10000-byte limit")
    refused(app, PayloadValueError, lambda: fn.enqueue("é" * 6_000), match="over the 10000-byte limit")
    fn.enqueue("x" * 9_000)  # just under the limit is fine


def test_oversized_meta_and_bad_meta_are_refused(app: App, fn: Any) -> None:
    refused(app, PayloadValueError, lambda: fn.options(meta={"blob": "x" * 20_000}).enqueue())
    refused(app, PayloadTypeError, lambda: fn.options(meta={"when": dt.date(2030, 1, 1)}).enqueue())


@pytest.mark.parametrize("depth", [65, 500, 100_000])
def test_deeply_nested_payloads_are_refused_without_recursion_errors(app: App, fn: Any, depth: int) -> None:
    deep: Any = "leaf"
    for i in range(depth):
        deep = [deep] if i % 2 else {"k": deep}
    refused(app, PayloadValueError, lambda: fn.enqueue(deep), match="nested deeper than 64")


def test_nesting_at_the_limit_is_accepted(app: App, fn: Any) -> None:
    deep: Any = 0
    for _ in range(62):  # + the payload's own {"args": [...]} wrapper
        deep = [deep]
    fn.enqueue(deep)


def test_a_bad_job_in_a_batch_writes_none_of_the_batch(app: App, fn: Any) -> None:
    batch = [fn.prepare(i) for i in range(50)] + [fn.prepare({1, 2})]
    refused(app, PayloadTypeError, lambda: app.enqueue_many(batch))


def test_circular_structures_are_refused(app: App, fn: Any) -> None:
    loop: list[Any] = []
    loop.append(loop)
    refused(app, (PayloadTypeError, PayloadValueError), lambda: fn.enqueue(loop))  # type: ignore[arg-type]


# -- names and options ---------------------------------------------------------------------------------


BAD_QUEUES = [
    "x'; DROP TABLE minijobs_jobs; --",
    "default' OR '1'='1",
    "q" * 10_000,
    "",
    " leading",
    "new\nline",
    "nul\x00byte",
    "ünïcode",
    None,
    7,
]


@pytest.mark.parametrize("name", BAD_QUEUES)
def test_bad_queue_names_are_refused_everywhere(app: App, fn: Any, name: Any) -> None:
    message = refused(app, InvalidNameError, lambda: fn.options(queue=name).enqueue())
    assert len(message) < 400, "a 10k-character name must not be echoed whole"
    refused(app, InvalidNameError, lambda: app.pause_queue(name))
    refused(app, InvalidNameError, lambda: app.resume_queue(name))
    if name is not None:  # jobs(queue=None) means every queue
        refused(app, InvalidNameError, lambda: app.jobs(queue=name))
    with pytest.raises(InvalidNameError):
        Queue(name)
    with pytest.raises(InvalidNameError):
        app.job(queue=name)


@pytest.mark.parametrize("name", ["os.system", "1abc", "a b", "x" * 300, "evil;drop", ""])
def test_bad_job_names_are_refused_at_registration(app: App, name: str) -> None:
    if name == "os.system":
        # A dotted name is a valid *name*: it is only ever looked up in the registry.
        app.job(name=name)(lambda: None)
        return
    with pytest.raises(InvalidNameError):
        app.job(name=name)(lambda: None)


@pytest.mark.parametrize(
    "options",
    [
        {"priority": 2**40},
        {"priority": True},
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"timeout_s": 0},
        {"timeout_s": float("inf")},
        {"delay_s": -1},
        {"delay_s": float("nan")},
        {"run_at": dt.datetime(2030, 1, 1)},
        {"unique_key": ""},
        {"unique_key": "k" * 513},
        {"unique_key": 5},
    ],
)
def test_bad_options_are_configuration_errors(app: App, fn: Any, options: dict[str, Any]) -> None:
    refused(app, ConfigurationError, lambda: fn.options(**options).enqueue())


# -- tampered rows: unknown names and garbage payloads ---------------------------------------------------------


def insert_raw(app: App, name: str, payload: Any) -> int:
    conn = sqlite3.connect(app.path)
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO minijobs_jobs (name, queue, payload, state, max_attempts, scheduled_at, created_at) "
                "VALUES (?, 'default', ?, 'pending', 3, 0, 0)",
                (name, payload),
            )
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def test_a_dotted_path_in_the_db_is_never_imported_or_called(
    app: App, fn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"mj_trap_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef run(*a, **k):\n    open({str(marker)!r}, 'a').write('called')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pwned = tmp_path / "pwned"
    rogue = [
        insert_raw(app, f"{module}.run", '{"args":[],"kwargs":{}}'),
        insert_raw(app, "os.system", f'{{"args":["touch {pwned}"],"kwargs":{{}}}}'),
        insert_raw(app, "builtins.exec", '{"args":["import os"],"kwargs":{}}'),
        insert_raw(app, "never_registered", '{"args":[],"kwargs":{}}'),
    ]
    good = fn.enqueue("after the rogues")
    app.drain()
    assert not marker.exists() and module not in sys.modules
    assert not pwned.exists()
    for job_id in rogue:
        job = app.get(job_id)
        # Not retried although max_attempts=3: another attempt cannot register the name.
        assert (job.state, job.attempts) == (JobState.FAILED, 1)
        assert job.errors[0].type == "minijobs.UnknownJobError"
    assert app.get(good.id).result == "ran", "the worker must keep going"


@pytest.mark.parametrize(
    "garbage",
    [
        "{not json",
        "",
        "null",
        "[1, 2]",
        '{"args": 5, "kwargs": {}}',
        '{"args": [], "kwargs": []}',
        '{"args": []}',
        "NaN",
        b"\x00\xff\xfe binary",
        12345,
    ],
)
def test_garbage_payload_fails_that_job_as_undecodable_and_the_worker_lives(
    app: App, fn: Any, garbage: Any
) -> None:
    before = fn.enqueue("before")
    bad = insert_raw(app, "bad_input.fn", garbage)
    after = fn.enqueue("after")
    app.drain()
    job = app.get(bad)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    assert job.errors[0].type == "minijobs.PayloadValueError"
    assert "stored payload is not valid" in job.errors[0].message
    assert app.get(before.id).result == app.get(after.id).result == "ran"


def test_garbage_payload_in_a_worker_thread_keeps_the_worker_alive(app: App, fn: Any) -> None:
    bad = insert_raw(app, "bad_input.fn", "{{{")
    with app.running():
        good = fn.enqueue("still flowing")
        assert good.wait(timeout_s=10).result == "ran"
        assert app.get(bad).state is JobState.FAILED


@pytest.mark.parametrize(("column", "garbage"), [("meta", "{bad"), ("errors", "nope"), ("progress", "{x"),
                                                ("result", "{y"), ("meta", "[1, 2")])
def test_garbage_in_other_columns_fails_that_job_with_a_typed_error(
    app: App, fn: Any, column: str, garbage: str
) -> None:
    # Before the fix a bare JSONDecodeError escaped from the claim: the worker died, and the
    # claimed batch stayed running until its leases expired, only to kill the next worker.
    bad = fn.enqueue("tampered")
    app.store.execute_write("tamper", f"UPDATE minijobs_jobs SET {column}=? WHERE id=?", (garbage, bad.id))
    with app.running():
        good = fn.enqueue("still flowing")
        assert good.wait(timeout_s=10).result == "ran"
    (state, errors) = app.store.query("q", "SELECT state, errors FROM minijobs_jobs WHERE id=?", (bad.id,))[0]
    assert state == "failed" and "CorruptDatabaseError" in errors and f"job {bad.id}" in errors
    if column != "errors":  # the damaged column is kept as evidence; reading the job says so
        with pytest.raises(CorruptDatabaseError, match=f"job {bad.id}: its stored row is damaged"):
            app.get(bad.id)


def test_unknown_state_is_a_typed_error_on_read(app: App, fn: Any) -> None:
    ref = fn.enqueue()
    app.store.execute_write("tamper", "UPDATE minijobs_jobs SET state='bogus' WHERE id=?", (ref.id,))
    with pytest.raises(CorruptDatabaseError, match=f"job {ref.id}"):
        app.get(ref.id)
    app.drain()  # never claimed, and the worker does not mind


# -- damaged files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [b"", b"SQLite format 3\x00"])
def test_random_bytes_are_refused_at_open(tmp_path: Path, prefix: bytes) -> None:
    path = tmp_path / "random.sqlite3"
    content = prefix + random.Random(7).randbytes(64 * 1024)
    path.write_bytes(content)
    app = App(path, plugins=[])
    with pytest.raises(CorruptDatabaseError, match="not a SQLite database|damaged"):
        app.open()
    assert path.read_bytes() == content, "a refused file must not be touched"
    assert not Path(f"{path}-wal").exists()


def test_text_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 10)
    with pytest.raises(CorruptDatabaseError, match="bad header"):
        App(path, plugins=[]).open()
    assert path.read_text().startswith("these are my notes")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(minijobs.StoreError, match="directory"):
        App(tmp_path, plugins=[]).open()


def test_zero_length_file_is_a_new_empty_database(tmp_path: Path) -> None:
    # Decision: an empty file is what tempfile.mkstemp() and NamedTemporaryFile hand out, and
    # SQLite itself treats it as a new database; refusing it would break that common idiom, while
    # no real database is ever zero bytes long, so nothing is lost by accepting it.
    path = tmp_path / "empty.sqlite3"
    path.touch()
    path.chmod(0o600)
    app = App(path, plugins=[])
    f = app.job(name="x")(lambda: 42)
    ref = f.enqueue()
    app.drain()
    assert app.get(ref.id).result == 42
    assert app.store.integrity_check() == ["ok"]
    app.close()


@pytest.mark.parametrize(("page", "offset"), [(1, 100), (1, 2000), (2, 0)])
def test_damaged_header_or_schema_page_is_refused_at_open(tmp_path: Path, page: int, offset: int) -> None:
    path = tmp_path / "jobs.sqlite3"
    make_db(path)
    data = bytearray(path.read_bytes())
    start = (page - 1) * 4096 + offset
    data[start:start + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError, match="damaged"):
        App(path, plugins=[]).open()


def test_damaged_data_page_is_a_clear_typed_error_on_first_use(tmp_path: Path) -> None:
    # Opening checks the header and the schema (cheap); proving every page sound costs a full scan,
    # so by default damage deeper in the file surfaces as CorruptDatabaseError when touched
    # (App(integrity_check=...) finds it at open: see the tests below).
    path = tmp_path / "jobs.sqlite3"
    make_db(path, jobs=2000)
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='minijobs_jobs'").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * 4096
    data[start:start + 4096] = b"\xa5" * 4096  # the jobs table's root page
    path.write_bytes(bytes(data))
    app = App(path, plugins=[])
    try:
        app.open()
        with pytest.raises(CorruptDatabaseError, match="damaged"):
            app.jobs()
        assert app.store.integrity_check() != ["ok"]
    except CorruptDatabaseError:
        pass  # detected even earlier: also fine
    finally:
        app.close()


@pytest.mark.parametrize("mode", ["quick", "full"])
@pytest.mark.parametrize("btree", ["minijobs_jobs", "minijobs_jobs_runnable"])
def test_integrity_check_at_open_finds_a_damaged_deep_page(tmp_path: Path, btree: str, mode: str) -> None:
    path = tmp_path / "jobs.sqlite3"
    make_db(path, jobs=2000)  # ~150 pages of 4 KiB: the table and its runnable index both have interior roots
    damage_deep_page(path, btree)
    content = path.read_bytes()
    app = App(path, plugins=[], integrity_check=mode)  # type: ignore[arg-type]
    pragma = {"quick": "quick_check", "full": "integrity_check"}[mode]
    with pytest.raises(CorruptDatabaseError, match=f"^{re.escape(str(path))} is damaged: PRAGMA {pragma} "):
        app.open()
    assert app._store is None
    assert path.read_bytes() == content, "a damaged file must not be written to"
    with pytest.raises(CorruptDatabaseError, match="is damaged"):
        app.check_integrity(mode)  # type: ignore[arg-type]
    # Without the check the file opens; the damage is found only when a query reaches the page.
    unchecked = App(path, plugins=[])
    try:
        unchecked.open()
        with pytest.raises(CorruptDatabaseError, match="damaged"):
            unchecked.store.check_integrity(mode)  # type: ignore[arg-type]
    finally:
        unchecked.close()


def test_integrity_check_passes_on_a_sound_file_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    make_db(path, jobs=2000)
    for mode in ("quick", "full"):
        app = App(path, plugins=[], integrity_check=mode)  # type: ignore[arg-type]
        f = app.job(name="x")(lambda *a: "ran")
        ref = f.enqueue()
        app.check_integrity(mode)  # type: ignore[arg-type]  # on an open app too
        app.drain()
        assert app.get(ref.id).result == "ran"
        app.close()
    fresh = App(tmp_path / "new.sqlite3", plugins=[], integrity_check="full")
    fresh.open()  # a brand-new file is sound
    fresh.close()


def test_integrity_check_option_is_checked(tmp_path: Path) -> None:
    for bad in ("yes", True, "QUICK", 1):
        with pytest.raises(ConfigurationError, match="integrity_check"):
            App(tmp_path / "jobs.sqlite3", integrity_check=bad)  # type: ignore[arg-type]
    app = App(tmp_path / "jobs.sqlite3", plugins=[])
    with pytest.raises(ConfigurationError, match="integrity check"):
        app.check_integrity("fast")  # type: ignore[arg-type]
    assert not (tmp_path / "jobs.sqlite3").exists()


# -- cron fuzzing --------------------------------------------------------------------------------------------------

_CRON_NOISE = [
    "*", "*/", "/", "-", ",", " ", "\t", "0", "7", "24", "32", "60", "-1", "2147483648", "99999999999999999999",
    "foo", "L", "W", "#", "?", "@", "@every", "@reboot", "\x00", "é", "٣", "５", "\n", ";", "' OR 1=1 --", "%",
]
_CRON_FIELDS = [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, ["jan", "Feb", "DEC"]), (0, 7, ["mon", "SUN", "fri"])]


def _cron_field(rng: random.Random, low: int, high: int, names: list[str]) -> str:
    def value() -> str:
        if names and rng.random() < 0.3:
            return rng.choice(names)
        return str(rng.randint(low, high))

    form = rng.randrange(6)
    if form == 0:
        return "*"
    if form == 1:
        return f"*/{rng.randint(1, high)}"
    if form == 2:
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        return f"{a}-{b}" + (f"/{rng.randint(1, 5)}" if rng.random() < 0.5 else "")
    if form == 3:
        return ",".join(value() for _ in range(rng.randint(2, 4)))
    return value()


def _random_cron(rng: random.Random) -> str:
    """Mostly well-formed expressions, then mutated: the parser sees near-misses, not just noise."""
    roll = rng.random()
    if roll < 0.05:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if roll < 0.08:
        return " ".join(rng.choice(["*", "1-59/2", "0,1,2,3"]) for _ in range(rng.randrange(1, 400)))
    if roll < 0.12:
        return rng.choice(["@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"])
    text = " ".join(_cron_field(rng, *field) for field in _CRON_FIELDS)
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        pos = rng.randrange(len(text) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            text = text[:pos] + rng.choice(_CRON_NOISE) + text[pos:]
        elif kind == 1:
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos] + text[pos:].replace(" ", "", 1)
    return text


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    try:
        call()
    except minijobs.CronError:
        pass
    return time.perf_counter() - start


def test_cron_fuzz_only_raises_cron_error_and_parses_quickly() -> None:
    from minijobs import cron

    rng = random.Random(20260521)
    after = dt.datetime(2030, 3, 31, 0, 30, tzinfo=dt.UTC)
    parsed = 0
    for _ in range(10_000):
        text = _random_cron(rng)
        try:
            expression = cron.parse(text)
        except minijobs.CronError:
            pass
        except Exception as exc:  # pragma: no cover - the failure message shows the input
            raise AssertionError(f"cron.parse({text!r}) raised {type(exc).__name__}: {exc}") from exc
        else:
            parsed += 1
            fire = expression.next_fire(after)
            assert fire > after and fire.tzinfo is not None
        # A hang detector, not a speed target: re-time once so scheduler noise cannot fail it.
        elapsed = _timed(functools.partial(cron.parse, text))
        if elapsed > 0.010:
            elapsed = min(elapsed, _timed(functools.partial(cron.parse, text)))
        assert elapsed < 0.010, f"cron.parse({text!r}) took {elapsed * 1000:.1f} ms"
    assert 1000 < parsed < 9000, f"the generator should mix valid and invalid expressions ({parsed} valid)"


@pytest.mark.parametrize("value", [None, 5, b"* * * * *", ["*"] * 5, "", " ", "* * * *", "* * * * * *"])
def test_cron_non_strings_and_wrong_field_counts(value: Any) -> None:
    from minijobs import cron

    with pytest.raises(minijobs.CronError):
        cron.parse(value)

