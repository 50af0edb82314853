"""The :class:`Plugin` ABC: periodic and cross-cutting work that runs beside a worker.

A plugin's :meth:`run` is a long-lived coroutine, restarted with backoff if it
raises, cancelled when the worker stops.  ``while await self.sleep(interval):``
is the idiomatic loop: :meth:`sleep` returns True when the time elapsed or
:meth:`wake_up` was called, and False once the worker is stopping.  Work that
is due at a time of the app's clock (so a test's ``FakeClock`` drives it)
waits with :meth:`sleep_until` instead.

Plugins are configured in code (constructor keywords) or from a plain mapping
(a ``[plugins.<name>]`` TOML table) through :meth:`configure`, which checks
every key and type against :attr:`Plugin.config_schema`.  See docs/plugins.md.
"""

from __future__ import annotations

import enum
import math
import threading
import types
from abc import ABC
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

from .errors import ConfigurationError
from .job import Job

if TYPE_CHECKING:
    import asyncio

    from .app import App
    from .worker import Worker


class PluginScope(enum.StrEnum):
    WORKER = "worker"  #: runs in every worker
    LEADER = "leader"  #: runs only in the worker that holds leadership among all processes


#: Longest single real-time nap of :meth:`Plugin.sleep_until`, so a jump of the wall clock is noticed.
MAX_NAP_S = 5.0


class Plugin(ABC):
    """Base class of plugins.  Subclasses override what they need; every hook has a no-op default.

    One plugin instance serves one running worker at a time (give each App its
    own instances).  Hooks run in the worker's event-loop thread and must not
    block; :meth:`run` runs as a task of that loop.
    """

    #: Schema migrations of tables the plugin owns, oldest first (see :meth:`migrate`).
    migrations: Sequence[str] = ()

    #: Options :meth:`configure` accepts, as ``name -> type``.  Types are ``float``, ``int``,
    #: ``bool``, ``str``, ``list[T]``, ``dict[str, T]``, ``Literal[...]``, unions such as
    #: ``float | None``, and ``Any`` (checked by :meth:`apply_config`).
    config_schema: ClassVar[Mapping[str, Any]] = {}

    def __init__(self) -> None:
        self._wake_lock = threading.Lock()
        self._wake_event: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._woken = False
        self._worker: Worker | None = None

    # -- identity ----------------------------------------------------------

    @classmethod
    def get_identifier(cls) -> str:
        """Unique name, e.g. ``"minijobs.pruner"``."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def get_dependencies(cls) -> Sequence[str]:
        """Identifiers of plugins that must also be configured."""
        return ()

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.WORKER

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply settings from a plain mapping (e.g. a ``[plugins.<name>]`` TOML table).

        Unknown keys and values of the wrong type raise
        :class:`~minijobs.ConfigurationError` naming the option; nothing is
        applied unless every option is valid.
        """
        values = check_config(self.get_identifier(), options, self.config_schema)
        self.apply_config(values)

    def apply_config(self, values: dict[str, Any]) -> None:
        """Store options already checked against :attr:`config_schema` (default: as attributes).

        Override to check ranges or convert values; raise
        :class:`~minijobs.ConfigurationError` naming the option.
        """
        for name, value in values.items():
            setattr(self, name, value)

    # -- life cycle --------------------------------------------------------

    def check(self, app: App) -> None:
        """Raise :class:`~minijobs.ConfigurationError` if this plugin cannot run in ``app`` as it stands.

        Called when a worker starts, before any job runs, so that a mistake
        only visible once the app is complete (a cron schedule naming a job
        that is not registered) stops the worker with one clear error instead
        of a :meth:`run` that crashes and is restarted forever.  The default
        accepts everything.
        """

    async def run(self, worker: Worker, app: App) -> None:
        """Long-running body; the default does nothing and returns."""

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (real time); True if the time passed or :meth:`wake_up` was called,
        False once the worker is stopping (at once if it already is)."""
        return await self._nap(seconds) is not None

    async def sleep_until(self, when: float, *, at_most_s: float | None = None) -> bool:
        """Sleep until the app's clock reads ``when`` (epoch seconds).

        Returns True when that time is reached, when ``at_most_s`` real seconds
        have passed, or when :meth:`wake_up` was called; False once the worker is
        stopping.  Jumps of an observable clock (``FakeClock.advance``) are
        noticed at once, so tests drive periodic plugins without sleeping.
        """
        import asyncio  # lazily: `import minijobs` loads no event loop machinery
        worker = self._worker
        if worker is None:
            return False
        app = worker.app
        loop = asyncio.get_running_loop()
        deadline = None if at_most_s is None else loop.time() + at_most_s
        self._ensure_event()
        unlisten = app.listen_clock(self._tick)
        try:
            while True:
                remaining = when - app.clock.now()
                if remaining <= 0:
                    return not worker.is_stopping
                nap = min(remaining, MAX_NAP_S)
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        return not worker.is_stopping
                    nap = min(nap, left)
                woken = await self._nap(nap)
                if woken is None:
                    return False
                if woken:
                    return True
        finally:
            if unlisten is not None:
                unlisten()

    def _ensure_event(self) -> asyncio.Event:
        import asyncio  # lazily: `import minijobs` loads no event loop machinery
        loop = asyncio.get_running_loop()
        with self._wake_lock:
            if self._wake_event is None or self._wake_loop is not loop:
                self._wake_loop = loop
                self._wake_event = asyncio.Event()
            return self._wake_event

    async def _nap(self, seconds: float) -> bool | None:
        """Wait up to ``seconds``: None if stopping, True if :meth:`wake_up` was called, else False."""
        import asyncio  # lazily: `import minijobs` loads no event loop machinery
        worker = self._worker
        if worker is None or worker.is_stopping:
            return None
        event = self._ensure_event()
        with self._wake_lock:
            if self._woken:
                self._woken = False
                return None if worker.is_stopping else True
            event.clear()
        stopping = asyncio.ensure_future(worker.stopping.wait())
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stopping, woken}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            woken.cancel()
        with self._wake_lock:
            was_woken, self._woken = self._woken, False
        if worker.is_stopping:
            return None
        return was_woken

    def wake_up(self) -> None:
        """Cut the current (or next) :meth:`sleep` short; safe from any thread."""
        with self._wake_lock:
            self._woken = True
        self._tick()

    def _tick(self) -> None:
        """Interrupt the current nap without counting as a wake-up (the clock moved: re-check the time)."""
        with self._wake_lock:
            loop, event = self._wake_loop, self._wake_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def wake_on(self, app: App, *patterns: str) -> Callable[[], None]:
        """Wake this plugin whenever ``app.events`` emits one of ``patterns`` (e.g. ``"job.enqueued"``).

        Returns a function that unsubscribes; call it when :meth:`run` ends.
        """
        if not patterns:
            raise ValueError("wake_on needs at least one event pattern")
        unsubscribes = [app.events.subscribe(pattern, self._on_wake_event) for pattern in patterns]

        def unsubscribe() -> None:
            for off in unsubscribes:
                off()

        return unsubscribe

    def _on_wake_event(self, event: Any) -> None:
        self.wake_up()

    def attach(self, worker: Worker | None) -> None:
        """Called by the worker before :meth:`run` (and with None after it stopped)."""
        self._worker = worker

    @property
    def worker(self) -> Worker | None:
        """The worker this plugin currently runs in (None when not running)."""
        return self._worker

    # -- job hooks (run in the worker's loop thread; each may be ``def`` or ``async def``) -------

    def on_job_starting(self, *, job: Job, worker: Worker) -> Job | Awaitable[Job]:
        """Return the job to run: ``job`` itself or a copy (``job.replace(args=...)``).

        Arguments and meta a hook changes are what the attempt runs with, and
        are stored with it (``app.get(id)`` shows them).  Plugins are asked in
        order, each seeing the previous one's job.
        """
        return job

    def on_job_trigger(
        self, *, job: Job, reason: str, data: dict[str, Any], worker: Worker
    ) -> Job | None | Awaitable[Job | None]:
        """Decide the outcome of an attempt that raised :class:`~minijobs.PluginTrigger` (QTasks' trigger).

        Return ``job.replace(state=JobState.SUCCEEDED, result=...)`` (or
        failed, cancelled, retrying with ``scheduled_at``) to decide it, or
        None to leave it to the next plugin.  When no plugin decides, the
        attempt fails with the trigger like with any error.
        """
        return None

    def on_job_completed(
        self, *, job: Job, worker: Worker, exc: BaseException | None, result: Any
    ) -> Job | Awaitable[Job]:
        """``job`` carries the proposed outcome (state, result, errors); return it or a changed copy.

        What is written stays consistent whatever the copy says: a result
        only with ``succeeded``, an error recorded for any other end the hook
        makes of the attempt.
        """
        return job

    def on_job_updated(self, *, job: Job, worker: Worker) -> None | Awaitable[None]:
        """Called after the outcome of ``job`` was written to the database."""
        return None

    async def on_drain(self, worker: Worker, app: App) -> None:
        """Called at the start of ``app.drain()`` (e.g. so cron enqueues what is due on a fake clock)."""

    # -- storage -----------------------------------------------------------

    def get_tables(self) -> Sequence[str]:
        return ()

    def cleanup(self, app: App) -> int | None:
        """Remove the plugin's stale rows; return how many (called by the Pruner)."""
        return None

    def migrate(self, app: App, to_version: int | None = None) -> int:
        """Bring this plugin's tables to ``to_version`` (default: latest); returns the version."""
        return app.store.migrate_component(self.get_identifier(), self.migrations, to_version=to_version)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_identifier()}>"


def check_config(owner: str, options: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``options`` against ``schema`` (``name -> type``); return them normalized (ints as floats, lists).

    Raises :class:`~minijobs.ConfigurationError` naming the first unknown
    option or the option whose value has the wrong type.
    """
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{owner}: configuration must be a mapping of options, got {type(options).__name__}")
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise ConfigurationError(f"{owner}: unknown option {key!r} (known options: {known})")
        values[key] = _coerce(owner, key, value, schema[key])
    return values


def _coerce(owner: str, path: str, value: Any, kind: Any) -> Any:
    origin = get_origin(kind)
    args = get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(owner, path, value, option)
            except ConfigurationError:
                continue
    elif origin is Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return value
    elif kind is type(None) or kind is None:
        if value is None:
            return None
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is int or kind is bool or kind is str:
        if type(value) is kind or (kind is not bool and isinstance(value, kind) and not isinstance(value, bool)):
            return value
    elif origin in (list, tuple, Sequence) or kind in (list, tuple):
        if isinstance(value, list | tuple):
            item = args[0] if args else Any
            return [_coerce(owner, f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    elif origin in (dict, Mapping) or kind is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            item = args[1] if len(args) == 2 else Any
            return {k: _coerce(owner, f"{path}.{k}", v, item) for k, v in value.items()}
    elif isinstance(kind, type) and isinstance(value, kind):
        return value
    raise ConfigurationError(f"{owner}: option {path!r} must be {_describe(kind)}, got {value!r}")


def _describe(kind: Any) -> str:
    origin = get_origin(kind)
    args = get_args(kind)
    if kind is Any:
        return "anything"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if kind is type(None) or kind is None:
        return "None"
    if kind is float:
        return "a number"
    if origin in (list, tuple, Sequence) or kind in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or kind is dict:
        return f"a table of {_describe(args[1])}" if len(args) == 2 else "a table"
    if isinstance(kind, type):
        return {"int": "an integer", "bool": "a boolean", "str": "a string"}.get(kind.__name__, f"a {kind.__name__}")
    return str(kind)


def overrides(plugin: Plugin, name: str) -> bool:
    """True if ``plugin`` overrides hook ``name`` (so the worker can skip no-op hooks on hot paths)."""
    return getattr(type(plugin), name) is not getattr(Plugin, name)
