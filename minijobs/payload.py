"""JSON encoding of job arguments and results, strict enough to round-trip exactly.

A value is accepted only if ``json.loads(json.dumps(value)) == value`` *and*
has the same types: tuples (which come back as lists), non-string dict keys
(which come back as strings), NaN/Infinity (not JSON), sets, bytes, datetimes
and arbitrary objects are refused with a message that names where the bad
value sits.  Refusing at enqueue is what lets a job see in production exactly
the arguments it was called with in a test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from .errors import PayloadTypeError, PayloadValueError

MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 1_000_000

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True)
_decode = json.loads
# ``JSONEncoder.encode`` builds a new C encoder on every call; build it once instead (about
# 2 us saved per enqueue).  Without a circular-reference check: a cycle ends in
# RecursionError, which is reported like any other unencodable payload.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encoder = _c_make_encoder(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def _encode(value: Any) -> str:
        return "".join(_c_encoder(value, 0))

else:  # pragma: no cover - CPython always has the C accelerator

    def _encode(value: Any) -> str:
        return _encoder.encode(value)


# The C scanner without ``json.loads``'s whitespace handling (stored payloads have none).
_scan_once: Callable[[str, int], tuple[Any, int]] = getattr(json.decoder.JSONDecoder(), "scan_once")  # noqa: B009


def encode(
    value: Any, *, what: str = "value", max_bytes: int | None = None, roots: dict[str, Any] | None = None
) -> str:
    """Serialise ``value`` to compact JSON or raise a typed error naming the culprit.

    ``roots`` names the parts of ``value`` for error messages (e.g. ``args`` and ``kwargs``).
    """
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError):
        _explain_roots(value, what, roots)
        raise PayloadTypeError(f"{what} is not JSON-serialisable") from None
    # json.dumps already refused sets, bytes, objects and NaN; what it converts
    # silently (tuples, int keys, subclasses such as IntEnum) needs a walk.
    if _maybe_lossy(value):
        _explain_roots(value, what, roots)
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value, what)
    # Limits are in bytes: a character count under the limit proves nothing for non-ASCII text.
    if not text.isascii():
        size = utf8_size(text, what)
        if max_bytes is not None and size > max_bytes:
            raise PayloadValueError(f"{what} is {size} bytes of JSON, over the {max_bytes}-byte limit")
    elif max_bytes is not None and len(text) > max_bytes:
        raise PayloadValueError(f"{what} is {len(text)} bytes of JSON, over the {max_bytes}-byte limit")
    return text


def utf8_size(text: str, what: str) -> int:
    """Size of ``text`` in UTF-8; a lone surrogate (valid in a str, not in UTF-8 or SQLite) is refused."""
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise PayloadValueError(
            f"{what} contains {text[exc.start:exc.end]!r}, a lone surrogate that is not valid UTF-8"
        ) from None


def decode(text: str) -> Any:
    return _decode(text)


def _maybe_lossy(value: Any) -> bool:
    """True if ``value`` holds a type that compares equal after a JSON round trip but is not the same."""
    plain = _PLAIN
    stack = [value]
    pop = stack.pop
    push = stack.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    return True
                if type(sub) not in plain:
                    push(sub)
        elif kind is list:
            for sub in item:
                if type(sub) not in plain:
                    push(sub)
        elif kind not in plain:
            return True
    return False


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _is_flat(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """True if every argument is a plain scalar and every keyword a ``str`` of a real ``dict``.

    Such a call needs no lossiness or depth check: its JSON is exact and two levels deep.
    """
    if type(kwargs) is not dict:
        return False
    plain = _PLAIN
    for item in args:
        if type(item) not in plain:
            return False
    for key, item in kwargs.items():
        if type(item) not in plain or type(key) is not str:
            return False
    return True


def _call_is_clean(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], text: str) -> bool:
    """True if a call's arguments (encoded as ``text``) round-trip exactly and are not nested too deep."""
    if type(kwargs) is not dict:
        return False
    if _is_flat(args, kwargs):
        return True
    if text.count("[") + text.count("{") > MAX_DEPTH:
        return False
    return not (_maybe_lossy(list(args)) or _maybe_lossy(kwargs))


def _explain_roots(value: Any, what: str, roots: dict[str, Any] | None) -> None:
    for name, part in (roots or {what: value}).items():
        _explain(part, name, what)


def _explain(value: Any, root: str, what: str) -> None:
    """Walk ``value`` and raise a precise error for the first value JSON would not keep."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadValueError(f"{what} is nested deeper than {MAX_DEPTH} levels (at {path})")
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                raise PayloadValueError(f"{path} is {item!r}, which JSON cannot represent")
        elif kind in _PLAIN:
            continue
        elif kind is list:
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise PayloadTypeError(
                        f"{path} has key {key!r} of type {type(key).__name__}; JSON object keys must be str"
                    )
                stack.append((sub, f"{path}[{key!r}]", depth + 1))
        elif kind is tuple:
            raise PayloadTypeError(f"{path} is a tuple, which JSON turns into a list; pass a list")
        else:
            raise PayloadTypeError(
                f"{path} is of type {kind.__module__}.{kind.__qualname__}, which does not round-trip through JSON"
            )


def _check_depth(value: Any, what: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadValueError(f"{what} is nested deeper than {MAX_DEPTH} levels")
        if type(item) is list:
            stack.extend((sub, depth + 1) for sub in item)
        elif type(item) is dict:
            stack.extend((sub, depth + 1) for sub in item.values())


def encode_call(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], *, max_bytes: int) -> str:
    """Encode a job's arguments as the stored payload ``{"args": [...], "kwargs": {...}}``."""
    # Fast path for the usual clean payload (the C encoder writes a tuple as a JSON array, so
    # ``args`` is not copied); anything suspicious goes through encode() for its message.
    try:
        text = _encode({"args": args, "kwargs": kwargs})
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None:
        if text.isascii():
            size = len(text)
        else:
            try:
                size = len(text.encode())
            except UnicodeEncodeError:  # a lone surrogate: encode() says so, after the other checks
                size = max_bytes + 1
        if size <= max_bytes and _call_is_clean(args, kwargs, text):
            return text
    args = list(args)  # a tuple argument list would be reported as a tuple
    return encode({"args": args, "kwargs": kwargs}, what="job arguments", max_bytes=max_bytes,
                  roots={"args": args, "kwargs": kwargs})


def encode_calls(calls: Sequence[tuple[Sequence[Any], dict[str, Any]]], *, max_bytes: int) -> str | None:
    """The payloads of many calls as one JSON array, or None when any call needs :func:`encode_call`.

    For ``enqueue_many``: one C encoder pass for the whole batch instead of one
    call per job.  Only calls whose arguments are all plain scalars qualify
    (nothing can be lossy or too deep), and only if the whole array fits in
    ``max_bytes`` (then every payload does).  Anything else returns None and
    the caller encodes call by call, which raises the precise errors.
    """
    values: list[dict[str, Any]] = []
    append = values.append
    for args, kwargs in calls:
        if not _is_flat(args, kwargs):
            return None
        append({"args": list(args), "kwargs": kwargs})
    try:
        text = _encode(values)
    except (TypeError, ValueError, RecursionError):  # e.g. NaN
        return None
    if len(text) > max_bytes or not text.isascii():  # non-ASCII: encode_call measures bytes, per call
        return None
    return text


def decode_call(text: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inverse of :func:`encode_call`; raises ``PayloadValueError`` for anything else."""
    try:
        try:
            data, end = _scan_once(text, 0)
            if end != len(text):
                raise ValueError("trailing data")
        except (StopIteration, ValueError, TypeError):
            data = _decode(text)  # slow path: the real parser's verdict and message
        args, kwargs = data["args"], data["kwargs"]
    except (ValueError, TypeError, KeyError) as exc:
        raise PayloadValueError(f"stored payload is not valid job arguments: {exc}") from None
    if type(args) is not list or type(kwargs) is not dict:
        raise PayloadValueError("stored payload is not valid job arguments: wrong shape")
    return tuple(args), kwargs


def utf8_safe(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\udc80``), so it encodes as UTF-8 (and prints)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
