"""The job registry's parts: what ``@app.job`` returns and the per-job options.

:class:`JobFunction` (the decorated function, still callable as itself, with
enqueue methods), :class:`BoundJob` (one with per-enqueue options applied),
:class:`JobSpec` (those options, checked by :func:`_check_spec` so a job that
could not be stored and read back is refused at the call),
:class:`EnqueueRequest` (one job for :meth:`App.enqueue_many
<minijobs.App.enqueue_many>`) and :class:`JobRef` (the handle enqueue returns).

They live apart from :class:`~minijobs.App`, the facade, so that a change to
how a job is declared touches this file only, and so that modules which need
these types (the executors, the cron plugin) import them without loading the
facade and everything it pulls in.  The App is only a type here: this module
never imports it at run time, so there is no import circle to break.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import payload
from .backoff import Backoff
from .errors import ConfigurationError, JobArgumentsError
from .limits import INT32_MAX, INT32_MIN, check_duration, check_int, check_text, check_timestamp
from .names import check_queue_name

if TYPE_CHECKING:
    from .app import App
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

#: "Not given": an option left as it is (``JobFunction.options``) or an empty closure cell (``_cell``).
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Per-enqueue settings; defaults come from the ``@app.job`` decorator."""

    queue: str
    priority: int
    max_attempts: int
    timeout_s: float | None
    unique_key: str | None = None
    delay_s: float | None = None
    run_at: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def _check_spec(spec: JobSpec, *, max_payload_bytes: int) -> None:
    """Refuse options that could not be stored and read back (see :mod:`minijobs.limits`)."""
    check_queue_name(spec.queue)
    check_int(spec.priority, "priority", low=INT32_MIN, high=INT32_MAX)
    check_int(spec.max_attempts, "max_attempts", low=1, high=INT32_MAX)
    if spec.timeout_s is not None:
        check_duration(spec.timeout_s, "timeout_s")
    if spec.delay_s is not None:
        check_duration(spec.delay_s, "delay_s", allow_zero=True)
    if spec.delay_s is not None and spec.run_at is not None:
        raise ConfigurationError("give delay_s or run_at, not both")
    if spec.run_at is not None:
        if not isinstance(spec.run_at, datetime) or spec.run_at.utcoffset() is None:
            raise ConfigurationError("run_at must be a timezone-aware datetime")
        try:
            check_timestamp(spec.run_at.timestamp(), f"run_at {spec.run_at.isoformat()}")
        except OverflowError:
            raise ConfigurationError(f"run_at {spec.run_at!r} is outside the years 1 to 9999") from None
    if spec.unique_key is not None:
        check_text(spec.unique_key, "unique_key", max_chars=512)
    if not isinstance(spec.meta, Mapping):
        raise ConfigurationError(f"meta must be a mapping of str keys to JSON values, got {type(spec.meta).__name__}")
    if spec.meta:
        payload.encode(dict(spec.meta), what="meta", max_bytes=max_payload_bytes)


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One job to enqueue, built by ``fn.prepare(...)`` for :meth:`App.enqueue_many`."""

    function: JobFunction[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    spec: JobSpec


class _Signature:
    """Checks that a call fits a job function, so a job the worker would reject is never written.

    ``inspect.Signature.bind`` costs several microseconds; the usual job (plain
    parameters, called positionally) is checked by counting instead.
    """

    __slots__ = ("positional", "required", "signature")

    def __init__(self, func: Callable[..., Any]) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):  # no signature to check against (some builtins): the job decides
            self.signature = None
        params = () if self.signature is None else tuple(self.signature.parameters.values())
        simple = self.signature is not None and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        #: With only plain parameters, a positional call fits when its length is within these bounds.
        self.required = sum(p.default is p.empty for p in params) if simple else -1
        self.positional = len(params) if simple else -1

    def check_many(self, name: str, requests: Sequence[EnqueueRequest]) -> None:
        """:meth:`check` for a batch; the counting test inlined, as it runs once per job of ``enqueue_many``."""
        required, positional, check = self.required, self.positional, self.check
        for request in requests:
            if request.kwargs or not required <= len(request.args) <= positional:
                check(name, request.args, request.kwargs)

    def check(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not kwargs and self.required <= len(args) <= self.positional:
            return
        if self.signature is None or not all(type(key) is str for key in kwargs):
            return  # no signature, or keys JSON cannot hold: the payload check names the culprit
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise JobArgumentsError(f"arguments do not fit job {name}{self.signature}: {exc}") from None


class JobFunction(Generic[P, R]):
    """What ``@app.job`` returns: still callable as the plain function, plus enqueue methods."""

    def __init__(
        self, app: App, func: Callable[P, R], *, name: str, spec: JobSpec, retry: Backoff | None
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.spec = spec
        self.retry = retry
        self._signature = _Signature(func)
        functools.update_wrapper(self, func)

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise :class:`~minijobs.JobArgumentsError` (a ``TypeError``) if the call does not fit the function."""
        self._signature.check(self.name, args, kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def options(
        self,
        *,
        queue: str = _UNSET,
        priority: int = _UNSET,
        max_attempts: int = _UNSET,
        timeout_s: float | None = _UNSET,
        unique_key: str | None = _UNSET,
        delay_s: float | None = _UNSET,
        run_at: datetime | None = _UNSET,
        meta: Mapping[str, Any] = _UNSET,
    ) -> BoundJob[P, R]:
        """Override settings for one enqueue: ``fn.options(priority=5, delay_s=10).enqueue(...)``."""
        changes = {k: v for k, v in locals().items() if k != "self" and v is not _UNSET}
        spec = JobSpec(**{**_spec_dict(self.spec), **changes})
        _check_spec(spec, max_payload_bytes=self.app.max_payload_bytes)
        return BoundJob(self, spec)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> EnqueueRequest:
        return EnqueueRequest(self, args, dict(kwargs), self.spec)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        return self.app._enqueue_one(self, args, kwargs, self.spec)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        return await self.app._enqueue_one_async(self, args, kwargs, self.spec)

    def __repr__(self) -> str:
        return f"<JobFunction {self.name} queue={self.spec.queue!r}>"


def _spec_dict(spec: JobSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in JobSpec.__slots__}


class BoundJob(Generic[P, R]):
    """A job function with per-enqueue options applied."""

    __slots__ = ("function", "spec")

    def __init__(self, function: JobFunction[P, R], spec: JobSpec) -> None:
        self.function = function
        self.spec = spec

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> EnqueueRequest:
        return EnqueueRequest(self.function, args, dict(kwargs), self.spec)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        return self.function.app._enqueue_one(self.function, args, kwargs, self.spec)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        return await self.function.app._enqueue_one_async(self.function, args, kwargs, self.spec)


class JobRef:
    """A handle on an enqueued job.  ``created`` is False when a unique key matched a live job."""

    __slots__ = ("app", "created", "id")

    def __init__(self, app: App, job_id: int, *, created: bool = True) -> None:
        self.app = app
        self.id = job_id
        self.created = created

    def get(self) -> Job:
        return self.app.get(self.id)

    def cancel(self) -> Job:
        return self.app.cancel(self.id)

    def wait(self, *, timeout_s: float | None = None) -> Job:
        """Block until the job is succeeded, failed or cancelled; return it.

        Raises :class:`~minijobs.WaitTimeoutError` after ``timeout_s`` (real seconds).
        """
        return self.app._wait(self.id, timeout_s)

    async def wait_async(self, *, timeout_s: float | None = None) -> Job:
        return await self.app._wait_async(self.id, timeout_s)

    def __repr__(self) -> str:
        return f"JobRef(id={self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobRef) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)


def _same_definition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """True if ``b`` is ``a`` defined again (a module or notebook cell run twice), not another function.

    The same code is not enough: closures made by one factory share their code
    but not what they close over, and each would run something else.
    """
    if a is b:
        return True
    fa, fb = inspect.unwrap(a), inspect.unwrap(b)
    code_a, code_b = getattr(fa, "__code__", None), getattr(fb, "__code__", None)
    if code_a is None or code_a != code_b:
        return False
    cells_a, cells_b = getattr(fa, "__closure__", None) or (), getattr(fb, "__closure__", None) or ()
    if len(cells_a) != len(cells_b) or any(_cell(x) is not _cell(y) for x, y in zip(cells_a, cells_b, strict=True)):
        return False
    return bool(
        getattr(fa, "__defaults__", None) == getattr(fb, "__defaults__", None)
        and getattr(fa, "__kwdefaults__", None) == getattr(fb, "__kwdefaults__", None)
    )


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return _UNSET
