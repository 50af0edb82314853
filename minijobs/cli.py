"""The ``minijobs`` command line (also ``python -m minijobs``).

The CLI is a thin shell over the public API: it finds the user's
:class:`~minijobs.App` (``--app module:attribute``, the ``app`` key of
``minijobs.toml``, or a bare database with ``--db`` for inspection), applies
the config file's ``[worker]``, ``[queues.<name>]`` and ``[plugins.<name>]``
tables, and runs one command.  Job names given to ``enqueue`` are looked up in
the app's registry; nothing is imported from a name given on the command line
except the ``--app`` module, which is the user's own code.

Every error, the user's module failing to import included, is reported as
one line on stderr with exit status 1 (usage errors: 2); the traceback is
logged only at ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .app import App
from .errors import ConfigurationError, MinijobsError, StoreError, UnknownJobError
from .job import Job, JobState
from .plugin import Plugin
from .queue import Queue
from .store import IntegrityCheck

logger = logging.getLogger(__name__)

CONFIG_FILE = "minijobs.toml"

#: Executor names accepted in ``[queues.<name>] executor = ...``: attributes of ``minijobs.executors`` only.
EXECUTOR_NAMES = {
    "async": "AsyncExecutor",
    "thread": "ThreadExecutor",
    "process": "ProcessExecutor",
    "interpreter": "InterpreterExecutor",  # Python 3.14+ only
}

_TOP_KEYS = {"app", "worker", "queues", "plugins"}
_WORKER_KEYS = {"queues", "concurrency", "lease_s", "grace_s", "poll_interval_s"}
_QUEUE_KEYS = {"concurrency", "executor", "options"}


class CLIError(MinijobsError):
    """A command-line problem that is the user's to fix (shown as one line, exit status 1)."""


# -- configuration -------------------------------------------------------------


@dataclass
class Config:
    """The parsed ``minijobs.toml``; every table is optional."""

    path: Path | None = None
    app: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str] | None, *, required: bool = False) -> Config:
    """Read and check a config file; an absent default file is an empty config."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.exists():
        if required:
            raise CLIError(f"config file {p} does not exist")
        return Config()
    import tomllib

    with p.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{p}: invalid TOML: {exc}") from None
    _check_keys(data, _TOP_KEYS, str(p))
    app = data.get("app")
    if app is not None and not isinstance(app, str):
        raise ConfigurationError(f"{p}: app must be a string like \"myproject.jobs:app\"")
    worker = _table(data.get("worker", {}), f"{p}: [worker]")
    _check_keys(worker, _WORKER_KEYS, f"{p}: [worker]")
    queues = _table(data.get("queues", {}), f"{p}: [queues]")
    for name, options in queues.items():
        _check_keys(_table(options, f"{p}: [queues.{name}]"), _QUEUE_KEYS, f"{p}: [queues.{name}]")
    plugins = _table(data.get("plugins", {}), f"{p}: [plugins]")
    for name, options in plugins.items():
        _table(options, f"{p}: [plugins.{name}]")
    return Config(path=p, app=app, worker=worker, queues=queues, plugins=plugins)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


def load_app(spec: str, *, search: Sequence[Path] = ()) -> App:
    """Import ``module:attribute`` (the user's own module, named on the command line or in the config)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"--app {spec!r}: expected module:attribute, e.g. myproject.jobs:app")
    for directory in reversed([Path.cwd(), *search]):
        entry = str(directory.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CLIError(f"--app {spec!r}: cannot import module {exc.name!r} (run from your project directory?)") from None
        raise _import_failed(spec, module_name, exc) from exc
    except Exception as exc:
        # The user's own code failed while importing: name the module and the original error in
        # one line; main() logs the chained traceback at DEBUG (``--log-level DEBUG``).
        raise _import_failed(spec, module_name, exc) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CLIError(f"--app {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(target, App):
        raise CLIError(f"--app {spec!r} is a {type(target).__name__}, not a minijobs.App")
    return target


def _import_failed(spec: str, module_name: str, exc: Exception) -> CLIError:
    return CLIError(f"--app {spec!r}: importing {module_name} failed: {_describe(exc, typed=True)}")


def resolve_executor(name: str, where: str) -> type[Any]:
    """Map a config executor name to a class of ``minijobs.executors`` (never an arbitrary import)."""
    from . import executors
    from .executors.base import Executor

    if not isinstance(name, str):
        raise ConfigurationError(f"{where}: executor must be a string")
    cls = getattr(executors, EXECUTOR_NAMES.get(name, name), None)
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        available = sorted(k for k, v in EXECUTOR_NAMES.items() if hasattr(executors, v))
        raise ConfigurationError(f"{where}: unknown executor {name!r}; available: {available}")
    return cls


def apply_config(app: App, config: Config, *, concurrency: int | None = None) -> None:
    """Apply ``[queues.*]``, worker-wide concurrency and ``[plugins.*]`` to ``app`` before it runs.

    Concurrency of a queue, most specific last: the declaration in code, then
    ``[worker] concurrency``, then ``[queues.<name>] concurrency``; the
    ``--concurrency`` flag (``concurrency`` here) overrides them all.
    """
    where = str(config.path or CONFIG_FILE)
    default_concurrency = config.worker.get("concurrency")
    queues = {q.name: q for q in app.queues}
    for name, options in config.queues.items():
        changes: dict[str, Any] = {}
        if "executor" in options:
            changes["executor"] = resolve_executor(options["executor"], f"{where}: [queues.{name}]")
        if "options" in options:
            changes["executor_options"] = dict(_table(options["options"], f"{where}: [queues.{name}.options]"))
        if "concurrency" in options:
            changes["concurrency"] = options["concurrency"]
        base = queues.get(name) or Queue(name)
        queues[name] = dataclasses.replace(base, **changes)
    for name, queue in list(queues.items()):
        wanted = concurrency
        if wanted is None and "concurrency" not in config.queues.get(name, {}):
            wanted = default_concurrency
        if wanted is not None:
            queues[name] = dataclasses.replace(queue, concurrency=wanted)
    app.reconfigure(queues=queues.values())
    if config.plugins:
        _add_plugins(app, config)


def _add_plugins(app: App, config: Config) -> None:
    """``[plugins.<name>]`` tables replace the app's plugin of the same kind; ``enabled = false`` removes it."""
    from .plugins import disabled_in, from_config

    configured: list[Plugin] = from_config(config.plugins)
    dropped = {p.get_identifier() for p in configured} | disabled_in(config.plugins)
    app.reconfigure(plugins=(*(p for p in app.plugins if p.get_identifier() not in dropped), *configured))


# -- output helpers --------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-ready view of a job (timestamps as ISO 8601 UTC)."""
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "args": list(job.args),
        "kwargs": job.kwargs,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_s,
        "scheduled_at": _iso(job.scheduled_at),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
        "result": job.result,
        "errors": [
            {"attempt": e.attempt, "type": e.type, "message": e.message, "traceback": e.traceback, "at": _iso(e.at)}
            for e in job.errors
        ],
        "progress": None
        if job.progress is None
        else {"done": job.progress.done, "total": job.progress.total, "message": job.progress.message},
        "meta": job.meta,
        "unique_key": job.unique_key,
        "rescues": job.rescues,
        "cancel_requested": job.cancel_requested,
        "lease_owner": job.lease_owner,
    }


def _when(job: Job) -> datetime:
    if job.state.is_terminal and job.completed_at is not None:
        return job.completed_at
    if job.state is JobState.RUNNING and job.started_at is not None:
        return job.started_at
    return job.scheduled_at


def _short_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _progress_text(job: Job) -> str:
    if job.progress is None:
        return "-"
    fraction = job.progress.fraction
    return f"{fraction:.0%}" if fraction is not None else f"{job.progress.done:g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    out.writelines("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in [list(headers), *cells])


def _dump_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _format_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


class TTYProgress:
    """A one-line counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty()
        self.shown = False

    def update(self, done: int, total: int | None = None) -> None:
        if self.enabled:
            suffix = f"/{total}" if total is not None else ""
            self.stream.write(f"\r{self.label}: {done}{suffix}")
            self.stream.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _job_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job id must be a whole number, got {text!r}") from None


def _app_positional(text: str) -> str:
    """``worker``'s positional is the app, not a queue name (as it is for rq): say so if it looks like one."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(
            f"expected the app as module:attribute (e.g. myproject.jobs:app), got {text!r}; "
            "choose queues with -q NAME"
        )
    return text


def _strict_json(text: str, what: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{what}: {name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


# -- the session: lazily loaded app ------------------------------------------------


class Session:
    """What one invocation works on: the parsed arguments, the config and (lazily) the app."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        explicit = getattr(args, "config", None)
        self.config = load_config(explicit or (CONFIG_FILE if Path(CONFIG_FILE).exists() else None), required=bool(explicit))
        self._app: App | None = None

    @property
    def has_registry(self) -> bool:
        return getattr(self.args, "db", None) is None

    def app_spec(self) -> str | None:
        """The ``module:attribute`` given on the command line: ``--app``, or ``worker``'s positional."""
        option = getattr(self.args, "app", None)
        positional = getattr(self.args, "app_spec", None)
        if option is not None and positional is not None and option != positional:
            raise CLIError(f"two apps given: --app {option!r} and {positional!r}; give one")
        return option if option is not None else positional

    def app(self, *, concurrency: int | None = None) -> App:
        if self._app is None:
            app_spec = self.app_spec()
            db = getattr(self.args, "db", None)
            if app_spec is not None and db is not None:
                raise CLIError("give --app or --db, not both")
            if db is not None:
                app = App(db)
                hint = f"minijobs --db {db} migrate"
            else:
                spec = app_spec or self.config.app
                if spec is None:
                    raise CLIError(
                        f"no app given: pass --app module:app, --db PATH, or set app = \"module:app\" in {CONFIG_FILE}"
                    )
                search = [self.config.path.parent] if self.config.path is not None else []
                app = load_app(spec, search=search)
                hint = f"minijobs{'' if app_spec is None else f' --app {app_spec}'} migrate, or start a worker"
            apply_config(app, self.config, concurrency=concurrency)
            if getattr(self.args, "func", None) not in CREATES_DATABASE | NO_DATABASE:
                _require_database(app.path, hint)
            self._app = app
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def _require_database(path: str, hint: str) -> None:
    """Refuse to work on a database file that does not exist (opening it would create it).

    Only ``migrate``, ``worker`` and ``enqueue`` (:data:`CREATES_DATABASE`) may
    create the file: every other command that opens it, run from the wrong
    directory, would otherwise leave an empty database there and report it
    empty (or a job id as missing).  In-memory and ``file:`` URI paths are
    SQLite's to interpret and are left alone.
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    if not Path(path).exists():
        raise CLIError(f"no database at {Path(path).resolve()} (create one with: {hint})")


# -- commands ------------------------------------------------------------------------


def cmd_worker(s: Session) -> int:
    args = s.args
    app = s.app(concurrency=args.concurrency)
    if not s.has_registry:
        raise CLIError("worker needs --app (the job registry), not just --db")
    worker_cfg = s.config.worker
    options: dict[str, Any] = {}
    queues = args.queue or worker_cfg.get("queues")
    if queues is not None:
        options["queues"] = list(queues)
    for key in ("lease_s", "grace_s", "poll_interval_s"):
        value = getattr(args, key)
        if value is None:
            value = worker_cfg.get(key)
        if value is not None:
            options[key] = value
    if args.worker_id is not None:
        options["worker_id"] = args.worker_id
    if args.burst:
        options["burst"] = True
        options["plugins"] = False
    if args.no_plugins:
        options["plugins"] = False
    served = options.get("queues") or [q.name for q in app.queues]
    finished = 0

    def on_started(event: Any) -> None:
        s.err.write(
            f"minijobs: worker {event.data.get('worker_id')} started (pid {os.getpid()}; "
            f"queues: {', '.join(served)}; db: {app.path})\n"
        )
        s.err.flush()

    def on_completed(event: Any) -> None:
        nonlocal finished
        finished += 1

    unsubscribe = [app.events.subscribe("worker.started", on_started), app.events.subscribe("job.completed", on_completed)]
    try:
        app.run_worker(**options)
    finally:
        for cancel in unsubscribe:
            cancel()
    s.err.write(f"minijobs: worker stopped after {finished} job attempt(s)\n")
    return 0


def cmd_enqueue(s: Session) -> int:
    args = s.args
    app = s.app()
    if not s.has_registry:
        raise CLIError("enqueue needs --app (the job registry), not just --db")
    function = app.registry.get(args.name)
    if function is None:
        known = ", ".join(sorted(app.registry)) or "none"
        raise UnknownJobError(f"no job named {args.name!r} is registered by this app (registered: {known})")
    call_args = _strict_json(args.args, "--args")
    call_kwargs = _strict_json(args.kwargs, "--kwargs")
    if not isinstance(call_args, list):
        raise ValueError("--args must be a JSON array, e.g. '[1, \"two\"]'")
    if not isinstance(call_kwargs, dict):
        raise ValueError("--kwargs must be a JSON object, e.g. '{\"name\": \"x\"}'")
    overrides = {
        key: value
        for key, value in (
            ("queue", args.queue),
            ("priority", args.priority),
            ("delay_s", args.delay_s),
            ("max_attempts", args.max_attempts),
            ("unique_key", args.unique_key),
        )
        if value is not None
    }
    target: Any = function.options(**overrides) if overrides else function
    ref = target.enqueue(*call_args, **call_kwargs)
    job = ref.get()
    if args.json:
        _dump_json({"id": ref.id, "created": ref.created, "job": job_to_dict(job)}, s.out)
    elif ref.created:
        s.out.write(f"enqueued job {ref.id} ({job.name}) on queue {job.queue}, due {_short_time(job.scheduled_at)}\n")
    else:
        s.out.write(f"job {ref.id} with unique key {job.unique_key!r} is already {job.state}; nothing enqueued\n")
    return 0


def cmd_jobs_list(s: Session) -> int:
    args = s.args
    jobs = s.app().jobs(state=args.state or None, queue=args.queue, name=args.name, limit=args.limit)
    if args.json:
        _dump_json([job_to_dict(j) for j in jobs], s.out)
        return 0
    if not jobs:
        s.out.write("no jobs\n")
        return 0
    print_table(
        ("ID", "STATE", "QUEUE", "NAME", "ATTEMPTS", "AT (UTC)", "PROGRESS"),
        (
            (j.id, j.state.value, j.queue, _clip(j.name, 48), f"{j.attempts}/{j.max_attempts}",
             _short_time(_when(j)), _progress_text(j))
            for j in jobs
        ),
        s.out,
    )
    return 0


def cmd_jobs_show(s: Session) -> int:
    job = s.app().get(s.args.id)
    if s.args.json:
        _dump_json(job_to_dict(job), s.out)
        return 0
    data = job_to_dict(job)
    errors = data.pop("errors")
    for key, value in data.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) or value is None else value
        s.out.write(f"{key + ':':<18}{shown}\n")
    for error in errors:
        s.out.write(f"error (attempt {error['attempt']}, {error['at']}): {error['type']}: {error['message']}\n")
    if errors and errors[-1]["traceback"]:
        s.out.write("last traceback:\n" + errors[-1]["traceback"].rstrip() + "\n")
    return 0


def _bulk(s: Session, verb: str, ids: list[int], action: Callable[[int], Job]) -> int:
    """Apply ``action`` to each id and report each: the job's new state, or that id's error.

    A failing id does not stop the others (exit status 1 if any failed).  A
    :class:`~minijobs.errors.StoreError` is about the database, not the id: the
    ids done so far are reported, then it ends the command as one error line.
    """
    progress = TTYProgress(s.err, f"{verb} jobs")
    results: list[tuple[int, Job | Exception]] = []
    try:
        for i, job_id in enumerate(ids, 1):
            try:
                results.append((job_id, action(job_id)))
            except StoreError:
                raise
            except Exception as exc:
                logger.debug("job %s: not %s", job_id, verb, exc_info=True)
                results.append((job_id, exc))
            progress.update(i, len(ids))
    finally:
        progress.close()
        _report_bulk(s, results)
    return 1 if any(isinstance(r, Exception) for _, r in results) else 0


def _report_bulk(s: Session, results: list[tuple[int, Job | Exception]]) -> None:
    if s.args.json:
        _dump_json(
            [
                {"id": job_id, "error": {"type": type(r).__name__, "message": _one_line(r)}}
                if isinstance(r, Exception)
                else job_to_dict(r)
                for job_id, r in results
            ],
            s.out,
        )
    for job_id, r in results:
        if isinstance(r, Exception):
            s.out.flush()
            s.err.write(f"minijobs: error: job {job_id}: {_describe(r)}\n")
            s.err.flush()
        elif not s.args.json:
            stopping = " (cancel requested)" if r.cancel_requested and r.state is JobState.RUNNING else ""
            s.out.write(f"job {r.id} ({r.name}): {r.state}{stopping}\n")


def cmd_jobs_retry(s: Session) -> int:
    app = s.app()
    ids = list(s.args.ids)
    if s.args.failed:
        ids += [j.id for j in _all_jobs(app, state="failed", queue=s.args.queue, name=s.args.name)]
    if not ids:
        raise CLIError("nothing to retry: give job ids or --failed")
    return _bulk(s, "retried", ids, app.retry)


def cmd_jobs_cancel(s: Session) -> int:
    app = s.app()
    return _bulk(s, "cancelled", list(s.args.ids), app.cancel)


def _all_jobs(app: App, **filters: Any) -> list[Job]:
    found: list[Job] = []
    while True:
        batch = app.jobs(limit=1000, offset=len(found), **filters)
        found.extend(batch)
        if len(batch) < 1000:
            return found


def cmd_queues_list(s: Session) -> int:
    app = s.app()
    counts = app.queue_counts()
    paused = app.paused_queues()
    declared = {q.name: q for q in app.queues}
    names = list(declared) + sorted((set(counts) | paused) - set(declared))
    rows: list[dict[str, Any]] = []
    for name in names:
        queue = declared.get(name)
        if queue is not None:
            from .executors import AsyncExecutor

            executor = queue.executor or AsyncExecutor
            concurrency: int | None = queue.concurrency or executor.get_default_concurrency()
            executor_name = executor.__name__
        else:
            concurrency, executor_name = None, None
        by_state = counts.get(name, {state: 0 for state in JobState})
        rows.append({
            "name": name,
            "declared": queue is not None,
            "executor": executor_name,
            "concurrency": concurrency,
            "paused": name in paused,
            "counts": {state.value: by_state[state] for state in JobState},
        })
    if s.args.json:
        _dump_json(rows, s.out)
        return 0
    print_table(
        ("QUEUE", "EXECUTOR", "CONCURRENCY", "PAUSED", *(st.value.upper() for st in JobState)),
        (
            (r["name"], r["executor"] or "(not declared)", r["concurrency"] or "-", "yes" if r["paused"] else "no",
             *r["counts"].values())
            for r in rows
        ),
        s.out,
    )
    return 0


def _check_queue_known(s: Session, name: str, verb: str) -> None:
    """Refuse (with ``--app``) or note (with ``--db``) a queue nothing is known to use: most likely a typo.

    With the app's registry, a queue is known if the app (or its config file)
    declares it, if jobs of it are in the database (another deployment may
    serve it, and pausing holds them), or if it is paused already (so a stale
    pause can always be resumed).  With ``--db`` there is no declaration to
    check: any valid name goes, with a note if no job of it exists yet.
    """
    app = s.app()
    declared = [q.name for q in app.queues]
    if s.has_registry and name in declared:
        return
    has_jobs = bool(app.jobs(queue=name, limit=1))  # also checks the name
    if s.has_registry:
        if not has_jobs and name not in app.paused_queues():
            raise CLIError(
                f"queue {name!r} is not declared by this app (declared: {', '.join(declared)}) and has no jobs; "
                f"declare it, or {verb} it with --db to record it anyway"
            )
        if has_jobs:
            s.err.write(f"minijobs: note: queue {name} is not declared by this app; it has jobs in the database\n")
    elif not has_jobs:
        s.err.write(f"minijobs: note: no job of queue {name} is in the database (yet)\n")


def cmd_queues_pause(s: Session) -> int:
    _check_queue_known(s, s.args.name, "pause")
    s.app().pause_queue(s.args.name)
    s.out.write(f"paused queue {s.args.name}: no new jobs start in any process; running jobs finish\n")
    return 0


def cmd_queues_resume(s: Session) -> int:
    _check_queue_known(s, s.args.name, "resume")
    s.app().resume_queue(s.args.name)
    s.out.write(f"resumed queue {s.args.name}\n")
    return 0


def cmd_cron_list(s: Session) -> int:
    from .plugins import Cron

    app = s.app()
    plugin = next((p for p in app.plugins if isinstance(p, Cron)), None)
    if plugin is None:
        raise CLIError("this app has no Cron plugin (add minijobs.plugins.Cron, or a [plugins.cron] table)")
    plugin.check(app)  # a schedule its worker would refuse is the same one-line error here
    now = datetime.fromtimestamp(app.clock.now(), UTC)
    rows: list[dict[str, Any]] = []
    for entry in plugin.schedules():
        fires = [_iso(t) for t in plugin.next_fire_times(entry, after=now, count=s.args.count)]
        rows.append({
            "name": entry.name,
            "expression": entry.expression,
            "tz": entry.tz if isinstance(entry.tz, str) else str(entry.tz),
            "job": entry.job_name,
            "next": fires,
        })
    if s.args.json:
        _dump_json(rows, s.out)
        return 0
    if not rows:
        s.out.write("no cron schedules\n")
        return 0
    print_table(
        ("NAME", "SCHEDULE", "TZ", "JOB", "NEXT (UTC)"),
        ((r["name"], r["expression"], r["tz"], r["job"], ", ".join(r["next"])) for r in rows),
        s.out,
    )
    return 0


def cmd_prune(s: Session) -> int:
    """Delete old finished jobs: by the app's Pruner retention rules, or by ``--older-than``; one :func:`prune` pass."""
    from .plugins import prune

    args = s.args
    app = s.app()
    now = app.clock.now()
    if args.older_than is None:
        if args.state or args.queue:
            raise CLIError("--state and --queue need --older-than (without it the app's retention rules apply)")
        described = "by the app's retention rules"
    else:
        described = f"finished before {_short_time(datetime.fromtimestamp(now - args.older_than, UTC))}"
    progress = TTYProgress(s.err, "pruned jobs")
    try:
        report = prune(
            app, older_than_s=args.older_than, states=args.state, queue=args.queue, batch_size=args.batch,
            now=datetime.fromtimestamp(now, UTC), cleanup=not args.jobs_only, checkpoint=False,
            raise_on_cleanup_error=True, progress=progress.update,
        )
    finally:
        progress.close()
    if args.json:
        _dump_json({"jobs": report.jobs, "plugins": report.plugins}, s.out)
        return 0
    s.out.write(f"pruned {report.jobs} finished job(s) {described}\n")
    for name, removed in report.plugins.items():
        s.out.write(f"{name}: removed {removed} row(s)\n")
    return 0


def cmd_stats(s: Session) -> int:
    app = s.app()
    now = app.clock.now()
    minutes = s.args.minutes
    counts = app.counts()
    per_state = app.finished_counts(since=datetime.fromtimestamp(now - minutes * 60, UTC), intervals=minutes)
    per_minute = [sum(interval.values()) for interval in per_state]
    finished = {state.value: sum(interval[state] for interval in per_state) for state in JobState if state.is_terminal}
    total_finished = sum(finished.values())
    oldest = app.oldest_due_at()
    lag = None if oldest is None else max(0.0, now - oldest.timestamp())
    data = {
        "at": _iso(datetime.fromtimestamp(now, UTC)),
        "counts": {state.value: n for state, n in counts.items()},
        "window_minutes": minutes,
        "finished": finished,
        "throughput_per_minute": total_finished / minutes,
        "finished_per_minute": per_minute,
        "oldest_due_age_s": lag,
    }
    if s.args.json:
        _dump_json(data, s.out)
        return 0
    s.out.write("jobs by state:  " + ", ".join(f"{k} {v}" for k, v in data["counts"].items()) + "\n")
    s.out.write(
        f"last {minutes} min:    {total_finished} finished ({total_finished / minutes:.1f}/min): "
        + ", ".join(f"{k} {v}" for k, v in finished.items())
        + "\n"
    )
    s.out.write("per minute:     " + " ".join(str(n) for n in per_minute) + "  (oldest first)\n")
    s.out.write("oldest due job: " + ("none waiting" if lag is None else f"waiting {_format_age(lag)}") + "\n")
    return 0


def cmd_migrate(s: Session) -> int:
    app = s.app()
    app.open()  # creates or upgrades the schema (core and plugins)
    versions = app.schema_versions()
    if s.args.json:
        _dump_json({"db": app.path, "versions": versions}, s.out)
        return 0
    s.out.write(f"{app.path}: schema up to date\n")
    for component, version in versions.items():
        s.out.write(f"  {component}: version {version}\n")
    return 0


def cmd_check(s: Session) -> int:
    app = s.app()
    mode: IntegrityCheck = "full" if s.args.full else "quick"
    started = time.perf_counter()
    app.check_integrity(mode)  # damage raises CorruptDatabaseError: one line on stderr, exit status 1
    elapsed_ms = (time.perf_counter() - started) * 1000
    if s.args.json:
        _dump_json({"db": app.path, "check": mode, "ok": True, "elapsed_ms": round(elapsed_ms, 1)}, s.out)
        return 0
    pragma = "integrity_check" if mode == "full" else "quick_check"
    s.out.write(f"{app.path}: ok (PRAGMA {pragma}, {elapsed_ms:.0f} ms)\n")
    return 0


#: The commands that may create the database file; every other one needs it to exist (see _require_database)...
CREATES_DATABASE: frozenset[Callable[[Session], int]] = frozenset({cmd_migrate, cmd_worker, cmd_enqueue})
#: ...but for these, which never open it: ``cron list`` shows the schedules of the app's code and config.
NO_DATABASE: frozenset[Callable[[Session], int]] = frozenset({cmd_cron_list})


def find_benchmarks() -> Path:
    """The directory that holds the ``benchmarks`` package: the current directory or the source checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "benchmarks" / "__main__.py").is_file() or (root / "benchmarks" / "__init__.py").is_file():
            return root
    raise CLIError("the benchmark suite (benchmarks/) ships with the source repository; run from a checkout")


def cmd_bench(s: Session) -> int:
    root = find_benchmarks()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    argv = list(s.args.bench_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    import subprocess

    return subprocess.call([sys.executable, "-m", "benchmarks", *argv], env=env)


# -- parser ------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``minijobs --app x:app jobs list`` or ``... jobs list --app x:app``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("app selection")
    group.add_argument("--app", metavar="MODULE:ATTR", default=argparse.SUPPRESS,
                       help="import the App from your module, e.g. myproject.jobs:app")
    group.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                       help="inspect a database file without importing the app (no job registry)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help=f"config file (default: ./{CONFIG_FILE} if present)")
    group.add_argument("--log-level", default=argparse.SUPPRESS,
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default INFO for worker, WARNING otherwise")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="minijobs",
        description="Durable background jobs on SQLite: run workers, enqueue and inspect jobs.",
        parents=[common],
        epilog=f"Configuration: ./{CONFIG_FILE} (see docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"minijobs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(sub: Any, name: str, help: str, func: Callable[[Session], int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = command(commands, "worker", "run a worker until SIGTERM/SIGINT (second signal: stop at once)", cmd_worker)
    p.add_argument("app_spec", nargs="?", metavar="MODULE:ATTR", type=_app_positional,
                   help="the App to run, e.g. myproject.jobs:app (the same as --app)")
    p.add_argument("-q", "--queue", action="append", metavar="NAME", help="serve only this queue (repeatable)")
    p.add_argument("-c", "--concurrency", type=_positive_int, help="jobs at once per served queue (overrides config)")
    p.add_argument("--lease-s", type=float, dest="lease_s", help="lease length in seconds")
    p.add_argument("--grace-s", type=float, dest="grace_s", help="seconds running jobs get to finish on SIGTERM")
    p.add_argument("--poll-interval-s", type=float, dest="poll_interval_s", help="how often to look for other processes' commits")
    p.add_argument("--worker-id", help="worker id shown in leases and logs")
    p.add_argument("--burst", action="store_true", help="run every due job, then exit (no plugins)")
    p.add_argument("--no-plugins", action="store_true", help="do not run plugins in this worker")

    p = command(commands, "enqueue", "enqueue a registered job by name", cmd_enqueue)
    p.add_argument("name", help="registered job name (see the app's registry; never imported)")
    p.add_argument("--args", default="[]", metavar="JSON", help="positional arguments as a JSON array")
    p.add_argument("--kwargs", default="{}", metavar="JSON", help="keyword arguments as a JSON object")
    p.add_argument("--queue", help="override the job's queue")
    p.add_argument("--priority", type=int, help="higher runs first")
    p.add_argument("--delay-s", type=float, dest="delay_s", help="run no earlier than this many seconds from now")
    p.add_argument("--max-attempts", type=_positive_int, dest="max_attempts")
    p.add_argument("--unique-key", dest="unique_key", help="enqueue only if no live job holds this key")
    p.add_argument("--json", action="store_true", help="print JSON")

    jobs = command(commands, "jobs", "list, show, retry and cancel jobs", lambda s: 2)
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    p = command(jobs_sub, "list", "list jobs, newest first", cmd_jobs_list)
    p.add_argument("--state", action="append", choices=[s.value for s in JobState], help="filter (repeatable)")
    p.add_argument("--queue")
    p.add_argument("--name", help="job name")
    p.add_argument("--limit", type=_positive_int, default=50)
    p.add_argument("--json", action="store_true")
    p = command(jobs_sub, "show", "show one job with its errors", cmd_jobs_show)
    p.add_argument("id", type=_job_id)
    p.add_argument("--json", action="store_true")
    p = command(jobs_sub, "retry", "run finished jobs again", cmd_jobs_retry)
    p.add_argument("ids", type=_job_id, nargs="*", metavar="ID")
    p.add_argument("--failed", action="store_true", help="retry every failed job (filtered by --queue/--name)")
    p.add_argument("--queue")
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    p = command(jobs_sub, "cancel", "cancel jobs (running ones are stopped by their worker)", cmd_jobs_cancel)
    p.add_argument("ids", type=_job_id, nargs="+", metavar="ID")
    p.add_argument("--json", action="store_true")

    queues = command(commands, "queues", "list, pause and resume queues", lambda s: 2)
    queues_sub = queues.add_subparsers(dest="queues_command", metavar="ACTION", required=True)
    p = command(queues_sub, "list", "queues with their job counts", cmd_queues_list)
    p.add_argument("--json", action="store_true")
    p = command(queues_sub, "pause", "stop starting jobs of a queue in every process", cmd_queues_pause)
    p.add_argument("name")
    p = command(queues_sub, "resume", "resume a paused queue", cmd_queues_resume)
    p.add_argument("name")

    cron = command(commands, "cron", "inspect cron schedules", lambda s: 2)
    cron_sub = cron.add_subparsers(dest="cron_command", metavar="ACTION", required=True)
    p = command(cron_sub, "list", "schedules and their next fire times", cmd_cron_list)
    p.add_argument("--count", type=_positive_int, default=3, help="fire times to show per schedule")
    p.add_argument("--json", action="store_true")

    p = command(commands, "prune", "delete old finished jobs (and plugins' stale rows)", cmd_prune)
    p.add_argument("--older-than", type=parse_duration, metavar="DURATION",
                   help="finished longer ago than this (e.g. 90s, 15m, 12h, 7d); default: the app's Pruner retention")
    p.add_argument("--state", action="append", choices=[s.value for s in JobState if s.is_terminal])
    p.add_argument("--queue")
    p.add_argument("--batch", type=_positive_int, default=1000, help="rows deleted per transaction")
    p.add_argument("--jobs-only", action="store_true", help="skip the plugins' cleanup")
    p.add_argument("--json", action="store_true")

    p = command(commands, "stats", "counts by state, recent throughput, oldest waiting job", cmd_stats)
    p.add_argument("--minutes", type=_positive_int, default=5, help="throughput window (default 5)")
    p.add_argument("--json", action="store_true")

    p = command(commands, "migrate", "create or upgrade the database schema (core and plugins)", cmd_migrate)
    p.add_argument("--json", action="store_true")

    p = command(commands, "check", "read the whole database file and report damage (exit status 1 if damaged)",
                cmd_check)
    p.add_argument("--full", action="store_true",
                   help="PRAGMA integrity_check (also checks every index against its table; slower) "
                        "instead of PRAGMA quick_check")
    p.add_argument("--json", action="store_true")

    p = command(commands, "bench", "run the benchmark suite (python -m benchmarks); arguments pass through", cmd_bench)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="ARGS")
    return parser


# -- entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    at = _command_index(argv)
    if at is not None and argv[at] == "bench":
        # Everything after "bench" belongs to the benchmark suite, options included.
        args = parser.parse_args(argv[: at + 1])
        args.bench_args = argv[at + 1 :]
    else:
        args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or ("INFO" if args.command == "worker" else "WARNING")
    logging.basicConfig(level=level, stream=err, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    session: Session | None = None
    try:
        session = Session(args, out, err)
        return int(args.func(session))
    except KeyboardInterrupt:
        err.write("minijobs: interrupted\n")
        return 130
    except Exception as exc:
        # Whatever went wrong is one line; the traceback is for --log-level DEBUG.
        logger.debug("minijobs %s failed", args.command, exc_info=True)
        err.write(f"minijobs: error: {_describe(exc)}\n")
        return 1
    finally:
        if session is not None:
            try:
                session.close()
            except Exception as exc:
                logger.debug("closing the app failed", exc_info=True)
                err.write(f"minijobs: error while closing: {_describe(exc)}\n")


_VALUE_OPTIONS = {"--app", "--db", "--config", "--log-level"}


def _command_index(argv: Sequence[str]) -> int | None:
    """Index of the command word, skipping the global options before it."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _VALUE_OPTIONS:
            i += 2
        elif token.startswith("-"):
            i += 1
        else:
            return i
    return None


def _describe(exc: BaseException, *, typed: bool = False) -> str:
    """One line for an error: minijobs' own errors (and OS and value errors) by their message alone;
    any other exception, or any at all with ``typed``, as ``Type: message``."""
    text = _one_line(exc)
    if (typed or not isinstance(exc, MinijobsError | OSError | ValueError)) and str(exc):
        text = f"{type(exc).__name__}: {text}"
    return text


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
