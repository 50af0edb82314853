"""Validation of queue and job names (they reach SQL only as bound parameters, but also logs and CLIs)."""

from __future__ import annotations

import re

from .errors import InvalidNameError

_QUEUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
_JOB_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:<>-]{0,199}")


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not _QUEUE_RE.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "…"
        raise InvalidNameError(
            f"queue name {shown} is invalid: use 1-64 characters from letters, digits, '_', '.', ':' and '-'"
        )
    return name


def check_job_name(name: object) -> str:
    if not isinstance(name, str) or not _JOB_RE.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:80]) + "…"
        raise InvalidNameError(
            f"job name {shown} is invalid: start with a letter or '_', then up to 199 of letters, digits, '_.:<>-'"
        )
    return name
