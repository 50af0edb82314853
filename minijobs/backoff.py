"""Retry delay policy."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import MAX_DURATION_S, ConfigurationError


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff: ``base_s * factor ** (attempt - 1)``, capped at ``max_s``.

    ``jitter`` spreads retries of jobs that failed together by up to that
    fraction either way, so they do not hit a recovering service in lockstep.
    """

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("base_s", "factor", "max_s", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"Backoff.{name} must be a finite number, got {value!r}")
        if not (0 <= self.base_s <= MAX_DURATION_S and 0 <= self.max_s <= MAX_DURATION_S):
            raise ConfigurationError(f"Backoff base_s and max_s must be from 0 to {MAX_DURATION_S:.0f} s (100 years)")
        if self.factor < 1:
            raise ConfigurationError(f"Backoff.factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"Backoff.jitter must be within [0, 1], got {self.jitter}")

    def delay_s(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt that follows failed attempt ``attempt`` (1-based)."""
        exponent = max(0, attempt - 1)
        try:
            raw = self.base_s * self.factor**exponent
        except OverflowError:
            raw = self.max_s
        delay = min(self.max_s, raw)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay *= 1.0 + spread
        return max(0.0, delay)
